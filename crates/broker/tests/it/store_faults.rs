//! A store that fails: a failed `fdatasync` is never confirmed (publishers waiting get
//! `basic.nack`), later persistent publishes to durable queues are refused with 541 and the
//! reason, and the handle says why. Transient work goes on.

use crate::common::*;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use std::sync::Arc;
use warren_store::{CrashBackend, Fault};

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_never_confirmed_and_stops_persistent_publishing() {
    let crash = CrashBackend::new();
    let b = start_with(|b| b.storage(Arc::new(crash.clone()))).await;
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "dq").await;
    declare(&ch, "tq").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let publish = |key: &'static str, props: BasicProperties| {
        let ch = ch.clone();
        async move {
            let confirm =
                within(ch.basic_publish("", key, BasicPublishOptions::default(), b"m", props))
                    .await
                    .unwrap();
            within(confirm).await.unwrap()
        }
    };
    let first = publish("dq", persistent()).await;
    assert!(matches!(first, Confirmation::Ack(None)), "{first:?}");
    assert!(b.handle().counters().store_syncs > 0);
    assert_eq!(b.handle().store_failure(), None);

    crash.inject(Fault::Sync);
    let second = publish("dq", persistent()).await;
    assert!(
        matches!(second, Confirmation::Nack(None)),
        "what could not be synced is not confirmed: {second:?}"
    );
    let why = b.handle().store_failure().expect("the handle says why");
    assert!(why.contains("injected fdatasync failure"), "{why}");

    // Transient messages still flow, and are confirmed.
    let transient = publish("tq", BasicProperties::default()).await;
    assert!(
        matches!(transient, Confirmation::Ack(None)),
        "{transient:?}"
    );

    // A persistent message for a durable queue is refused, with the reason.
    let mut errors = channel_errors(&ch);
    let _ = ch
        .basic_publish("", "dq", BasicPublishOptions::default(), b"m", persistent())
        .await;
    let (code, text) = next_error(&mut errors).await;
    assert_eq!(code, 541);
    assert!(
        text.contains("message store failed") && text.contains("injected fdatasync failure"),
        "{text}"
    );
    b.stop().await;
}
