//! The `trading.iq720.io/test-notification` annotation (the runbook's
//! `test_alerts.py`): each new value sends one test notification through the
//! configured webhook, so a user can check the path end to end without an incident.
//! It is published as a Normal Event (reason `TestNotification`), which is what
//! forwards it to the webhook, so `kubectl describe` shows it was requested.

use iq720_crds::TradingBot;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use crate::shared::context::Context;
use crate::shared::notify::TEST_REASON;

/// Annotation whose every new value sends one test notification.
pub const TEST_NOTIFICATION_ANNOTATION: &str = "trading.iq720.io/test-notification";

/// Sends a test notification when the annotation carries a value not handled yet by
/// this operator process (after a restart the current value is sent once more, which
/// is harmless for a test).
pub async fn handle(ctx: &Context, bot: &TradingBot) {
    let Some(value) = bot.annotations().get(TEST_NOTIFICATION_ANNOTATION) else {
        return;
    };
    let uid = bot.uid().unwrap_or_default();
    if !ctx.notifier.first_request(&uid, value) {
        return;
    }
    ctx.event(
        bot,
        EventType::Normal,
        TEST_REASON,
        "Notify",
        format!("test notification requested with {TEST_NOTIFICATION_ANNOTATION}={value}"),
    )
    .await;
}
