//! Online backup: a copy of everything durable at one instant, taken while publishers go on;
//! a broker started on the copy has the definitions and exactly the messages of that instant.

use crate::common::{DataDir, declare_durable, start_with, within};
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_that_instant() {
    let data = DataDir::new();
    let copy = warren_testkit::TempDir::new("backup-copy");
    let b = data.start().await;
    b.handle().add_user("ops", "secret", &["administrator"]);
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "bq").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let publish = {
        let ch = ch.clone();
        move |i: u32| {
            let ch = ch.clone();
            let props = persistent.clone();
            async move {
                let c = within(ch.basic_publish(
                    "",
                    "bq",
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    props,
                ))
                .await
                .unwrap();
                assert!(matches!(within(c).await.unwrap(), Confirmation::Ack(None)));
            }
        }
    };
    for i in 0..1000 {
        publish(i).await;
    }
    // Ten taken and acked before the backup: not in it.
    for _ in 0..10 {
        let m = within(ch.basic_get("bq", BasicGetOptions::default()))
            .await
            .unwrap()
            .unwrap();
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    // The acks are processed before anything later on the channel: a round trip settles it.
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = within(ch.queue_declare("bq", passive, FieldTable::default()))
        .await
        .unwrap();
    assert_eq!(q.message_count(), 990);
    // Publishing goes on while the backup runs.
    let busy = tokio::spawn({
        let publish = publish.clone();
        async move {
            for i in 1000..3000 {
                publish(i).await;
            }
        }
    });
    let handle = b.handle();
    let target = copy.path().to_path_buf();
    let report = tokio::task::spawn_blocking(move || handle.backup(&target))
        .await
        .unwrap()
        .unwrap();
    assert!(report.files >= 2 && report.bytes > 0, "{report:?}");
    busy.await.unwrap();
    // A second backup into the same directory is refused: it must be empty.
    assert!(b.handle().backup(copy.path()).is_err());
    b.stop().await;

    let r = start_with(|b| b.data_dir(copy.path())).await;
    assert!(
        r.handle().users_list().iter().any(|(u, _)| u == "ops"),
        "definitions are in the backup"
    );
    let q = r.queue("bq").expect("the durable queue is in the backup");
    let (_c, ch) = r.lapin_channel().await;
    let mut seen = BTreeSet::new();
    while let Some(m) = within(ch.basic_get("bq", BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
    {
        let n: u32 = std::str::from_utf8(&m.delivery.data).unwrap()[1..]
            .parse()
            .unwrap();
        assert!(seen.insert(n), "m{n} twice");
    }
    assert_eq!(seen.len() as u64, q.messages_ready);
    // Exactly an instant: everything confirmed before the backup but the ten acked ones, then
    // a prefix of what was published meanwhile, nothing else.
    let expected_before: BTreeSet<u32> = (10..1000).collect();
    assert!(
        expected_before.is_subset(&seen),
        "lost messages of before the backup"
    );
    let during: Vec<u32> = seen.iter().copied().filter(|n| *n >= 1000).collect();
    assert!(
        during
            .iter()
            .enumerate()
            .all(|(i, n)| *n == 1000 + i as u32),
        "not a prefix: {during:?}"
    );
    let odd: Vec<u32> = seen
        .iter()
        .copied()
        .filter(|n| *n < 10 || *n >= 3000)
        .collect();
    assert!(odd.is_empty(), "acked or unknown: {odd:?}");
    r.stop().await;
}
