//! Prometheus metrics of the operator.

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Observes the duration of one reconcile when dropped (on every return path).
pub struct ReconcileMeasurer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileMeasurer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// The operator's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciliations by controller.
    pub reconciliations: IntCounterVec,
    /// Reconcile failures by controller and reason.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile duration by controller.
    pub reconcile_duration: HistogramVec,
    /// TradingBots by phase.
    pub bots_by_phase: IntGaugeVec,
    /// Emergency stops by result (`flat`, `positions_may_remain`).
    pub emergency_stops: IntCounterVec,
    /// Time from seeing an emergency stop to replicas 0.
    pub emergency_stop_duration: HistogramVec,
    /// Status writes by controller (an idle bot causes none).
    pub status_writes: IntCounterVec,
    /// Status writes refused because they were computed from an older object (409 on
    /// the `resourceVersion` precondition); the newer object is reconciled instead.
    pub stale_status_writes: IntCounterVec,
    /// Hot configuration reloads applied through the bot API.
    pub hot_reloads: IntCounterVec,
    /// 1 while this replica runs the controllers (holds the leader Lease), else 0.
    pub leader: IntGauge,
    /// Backups of one bot by result (`succeeded`, `skipped` or a failure label).
    pub backups: IntCounterVec,
    /// Duration of one bot's backup attempt (upload and verification), by result.
    pub backup_duration: HistogramVec,
    /// Bytes of backup archives written to S3.
    pub backup_bytes: IntCounter,
    /// Unix time of each bot's newest verified backup; its age is
    /// `time() - iq720_operator_backup_newest_verified_timestamp_seconds`.
    pub backup_newest_verified: IntGaugeVec,
    /// 1 while a MaintenanceWindow is open, else 0 (by namespace and window).
    pub maintenance_windows_open: IntGaugeVec,
    /// Disruptive operations deferred to a maintenance window, by operation (counted
    /// when a wait begins, not at every poll).
    pub maintenance_operations_deferred: IntCounterVec,
    /// Maintenance tasks run on one bot, by task and result.
    pub maintenance_tasks: IntCounterVec,
    /// Restore drills of one bot's backup, by result (`succeeded`, `failed`).
    pub restore_drills: IntCounterVec,
    /// Duration of one restore drill (pod start to result), by result.
    pub restore_drill_duration: HistogramVec,
    /// Unix time at which each bot's API tokens are due for rotation
    /// (`lastRotated + rotationInterval`); overdue = `time() - value > 0`.
    pub api_keys_rotation_due: IntGaugeVec,
    /// Webhook notifications by result (`sent`, `failed` after retries, `dropped`).
    pub notifications: IntCounterVec,
    /// Automatic rollbacks of a version rollout, by namespace and bot.
    pub rollbacks: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "iq720_operator_reconciliations_total",
                "Reconciliations started",
            ),
            &["controller"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "iq720_operator_reconcile_errors_total",
                "Reconciliations that failed",
            ),
            &["controller", "reason"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "iq720_operator_reconcile_duration_seconds",
                "Duration of a reconciliation",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["controller"],
        )?;
        let bots_by_phase = IntGaugeVec::new(
            Opts::new("iq720_operator_bots", "TradingBots by phase"),
            &["phase"],
        )?;
        let emergency_stops = IntCounterVec::new(
            Opts::new(
                "iq720_operator_emergency_stops_total",
                "Emergency stops carried out",
            ),
            &["result"],
        )?;
        let emergency_stop_duration = HistogramVec::new(
            HistogramOpts::new(
                "iq720_operator_emergency_stop_duration_seconds",
                "Time from seeing an emergency stop to zero replicas",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
            &["result"],
        )?;
        let status_writes = IntCounterVec::new(
            Opts::new(
                "iq720_operator_status_writes_total",
                "Status subresource writes",
            ),
            &["controller"],
        )?;
        let stale_status_writes = IntCounterVec::new(
            Opts::new(
                "iq720_operator_stale_status_writes_total",
                "Status writes refused because they were computed from an older object",
            ),
            &["controller"],
        )?;
        let hot_reloads = IntCounterVec::new(
            Opts::new(
                "iq720_operator_hot_reloads_total",
                "Configuration changes applied without a restart",
            ),
            &["result"],
        )?;
        let leader = IntGauge::new(
            "iq720_operator_leader",
            "1 while this replica runs the controllers (holds the leader Lease), else 0",
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(bots_by_phase.clone()))?;
        registry.register(Box::new(emergency_stops.clone()))?;
        registry.register(Box::new(emergency_stop_duration.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        registry.register(Box::new(stale_status_writes.clone()))?;
        registry.register(Box::new(hot_reloads.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        let backups = IntCounterVec::new(
            Opts::new(
                "iq720_operator_backups_total",
                "Backups of one bot, by result",
            ),
            &["result"],
        )?;
        let backup_duration = HistogramVec::new(
            HistogramOpts::new(
                "iq720_operator_backup_duration_seconds",
                "Duration of one bot's backup attempt (upload and verification)",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
            ]),
            &["result"],
        )?;
        let backup_bytes = IntCounter::new(
            "iq720_operator_backup_bytes_total",
            "Bytes of backup archives written to S3",
        )?;
        let backup_newest_verified = IntGaugeVec::new(
            Opts::new(
                "iq720_operator_backup_newest_verified_timestamp_seconds",
                "Unix time of the newest verified backup of a bot (age = time() - value)",
            ),
            &["namespace", "bot"],
        )?;
        registry.register(Box::new(backups.clone()))?;
        registry.register(Box::new(backup_duration.clone()))?;
        registry.register(Box::new(backup_bytes.clone()))?;
        registry.register(Box::new(backup_newest_verified.clone()))?;
        let maintenance_windows_open = IntGaugeVec::new(
            Opts::new(
                "iq720_operator_maintenance_window_open",
                "1 while a MaintenanceWindow is open, else 0",
            ),
            &["namespace", "window"],
        )?;
        let maintenance_operations_deferred = IntCounterVec::new(
            Opts::new(
                "iq720_operator_maintenance_operations_deferred_total",
                "Disruptive operations deferred to a maintenance window, by operation",
            ),
            &["operation"],
        )?;
        let maintenance_tasks = IntCounterVec::new(
            Opts::new(
                "iq720_operator_maintenance_tasks_total",
                "Maintenance tasks run on one bot, by task and result",
            ),
            &["task", "result"],
        )?;
        registry.register(Box::new(maintenance_windows_open.clone()))?;
        registry.register(Box::new(maintenance_operations_deferred.clone()))?;
        registry.register(Box::new(maintenance_tasks.clone()))?;
        let restore_drills = IntCounterVec::new(
            Opts::new(
                "iq720_operator_restore_drills_total",
                "Restore drills of one bot's backup, by result",
            ),
            &["result"],
        )?;
        let restore_drill_duration = HistogramVec::new(
            HistogramOpts::new(
                "iq720_operator_restore_drill_duration_seconds",
                "Duration of one restore drill (throwaway pod start to result)",
            )
            .buckets(vec![1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0]),
            &["result"],
        )?;
        registry.register(Box::new(restore_drills.clone()))?;
        registry.register(Box::new(restore_drill_duration.clone()))?;
        let api_keys_rotation_due = IntGaugeVec::new(
            Opts::new(
                "iq720_operator_api_keys_rotation_due_timestamp_seconds",
                "Unix time at which a bot's API tokens are due for rotation (overdue = time() - value > 0)",
            ),
            &["namespace", "bot"],
        )?;
        registry.register(Box::new(api_keys_rotation_due.clone()))?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "iq720_operator_notifications_total",
                "Webhook notifications by result (sent, failed after retries, dropped)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(notifications.clone()))?;
        let rollbacks = IntCounterVec::new(
            Opts::new(
                "iq720_operator_rollbacks_total",
                "Automatic rollbacks of a version rollout (the new version failed its health gate)",
            ),
            &["namespace", "bot"],
        )?;
        registry.register(Box::new(rollbacks.clone()))?;
        Ok(Self {
            registry,
            reconciliations,
            reconcile_errors,
            reconcile_duration,
            bots_by_phase,
            emergency_stops,
            emergency_stop_duration,
            status_writes,
            stale_status_writes,
            hot_reloads,
            leader,
            backups,
            backup_duration,
            backup_bytes,
            backup_newest_verified,
            maintenance_windows_open,
            maintenance_operations_deferred,
            maintenance_tasks,
            restore_drills,
            restore_drill_duration,
            api_keys_rotation_due,
            notifications,
            rollbacks,
        })
    }

    /// Counts a reconcile of `controller` and measures its duration until the returned
    /// guard is dropped.
    pub fn count_and_measure(&self, controller: &str) -> ReconcileMeasurer {
        self.reconciliations.with_label_values(&[controller]).inc();
        ReconcileMeasurer {
            start: Instant::now(),
            histogram: self.reconcile_duration.with_label_values(&[controller]),
        }
    }

    /// Counts a failed reconcile of `controller` with the error's metric label.
    pub fn reconcile_failure(&self, controller: &str, reason: &str) {
        self.reconcile_errors
            .with_label_values(&[controller, reason])
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
