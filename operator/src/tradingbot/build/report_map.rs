//! The ConfigMap holding the bot's performance reports (`<bot>-report`): one pair of
//! keys per period, `<period>.json` for programs and `<period>.txt` for people.
//!
//! Each period is applied by a field manager of its own
//! ([`field_manager`]), so writing the weekly report keeps the monthly one: server-side
//! apply removes only the fields the same manager applied before and left out now.

use iq720_contract::report::{PerformanceReport, ReportPeriod};
use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::BTreeMap;

use super::labels::report_map_name;
use super::{BuildError, Owner};

/// Annotation (one per period) with the request value the period's report answers.
pub fn request_annotation(period: ReportPeriod) -> String {
    format!("trading.iq720.io/report-{period}-request")
}

/// Annotation (one per period) with when the period's report was made (RFC 3339).
pub fn generated_at_annotation(period: ReportPeriod) -> String {
    format!("trading.iq720.io/report-{period}-generated-at")
}

/// The field manager that applies one period's keys.
pub fn field_manager(period: ReportPeriod) -> String {
    format!("{}-report-{period}", crate::FIELD_MANAGER)
}

/// Builds the period's part of the report ConfigMap.
pub fn build(
    owner: &Owner,
    request: &str,
    generated_at: &str,
    report: &PerformanceReport,
) -> Result<ConfigMap, BuildError> {
    let period = report.period;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| BuildError::Render(format!("report: {e}")))?;
    let mut metadata = owner.metadata(report_map_name(&owner.name));
    metadata.labels.get_or_insert_with(BTreeMap::new).insert(
        "app.kubernetes.io/component".to_string(),
        "report".to_string(),
    );
    metadata.annotations = Some(BTreeMap::from([
        (request_annotation(period), request.to_string()),
        (generated_at_annotation(period), generated_at.to_string()),
    ]));
    Ok(ConfigMap {
        metadata,
        data: Some(BTreeMap::from([
            (format!("{period}.json"), json + "\n"),
            (format!("{period}.txt"), report.render_text()),
        ])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owner() -> Owner {
        Owner {
            name: "demo".into(),
            namespace: "ns".into(),
            reference: OwnerReference {
                api_version: "trading.iq720.io/v1alpha1".into(),
                kind: "TradingBot".into(),
                name: "demo".into(),
                uid: "u1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    fn report() -> PerformanceReport {
        serde_json::from_value(serde_json::json!({
            "period": "monthly", "from": "2026-11-06T00:00:00Z", "to": "2026-12-06T00:00:00Z",
            "stakeCurrency": "USDT", "trades": 2, "wins": 1, "losses": 1, "winRate": 0.5,
            "pnl": 1.5, "grossProfit": 2.0, "grossLoss": -0.5, "profitFactor": 4.0, "fees": 0.1,
            "averagePnl": 0.75, "averageHoldingSeconds": 60.0, "equityStart": 1000.0,
            "equityEnd": 1001.5, "maxDrawdown": 0.5, "maxDrawdownPercent": 0.05, "openPositions": 0
        }))
        .unwrap()
    }

    #[test]
    fn one_period_keys_owned_and_labelled_with_its_request() {
        let cm = build(&owner(), "monthly-2", "2026-12-06T00:00:01Z", &report()).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-report"));
        assert_eq!(cm.metadata.owner_references.unwrap()[0].uid, "u1");
        let labels = cm.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "iq720-operator");
        assert_eq!(labels["app.kubernetes.io/component"], "report");
        let ann = cm.metadata.annotations.unwrap();
        assert_eq!(ann["trading.iq720.io/report-monthly-request"], "monthly-2");
        assert_eq!(
            ann["trading.iq720.io/report-monthly-generated-at"],
            "2026-12-06T00:00:01Z"
        );
        let data = cm.data.unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["monthly.json", "monthly.txt"]
        );
        let back: PerformanceReport = serde_json::from_str(&data["monthly.json"]).unwrap();
        assert_eq!(back, report());
        assert!(data["monthly.txt"].contains("2 closed: 1 won, 1 lost"));
        assert_eq!(
            field_manager(ReportPeriod::Monthly),
            "iq720-operator-report-monthly"
        );
    }
}
