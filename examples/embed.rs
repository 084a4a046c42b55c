//! Embedding the whole broker in a Rust service: start it in-process, let a client (here the
//! lapin crate) use it over TCP, read its state through the handle, and shut it down.
//!
//! ```text
//! cargo run --example embed
//! ```

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::time::Duration;
use warren_broker::Broker;

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse()?)
        .user("app", "secret", &[])
        .permissions("app", "/", ".*", ".*", ".*")
        .start()
        .await?;
    let addr = broker.local_addrs()[0];
    println!("broker listening on {addr}");

    let conn = Connection::connect(
        &format!("amqp://app:secret@{addr}/%2f"),
        ConnectionProperties::default(),
    )
    .await?;
    let channel = conn.create_channel().await?;
    channel
        .queue_declare(
            "jobs",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .basic_publish(
            "",
            "jobs",
            BasicPublishOptions::default(),
            b"hello from the embedding service",
            BasicProperties::default(),
        )
        .await?;
    let queues = broker.handle().queues("/")?;
    println!(
        "queues: {:?}",
        queues
            .iter()
            .map(|q| (&q.name, q.messages_ready))
            .collect::<Vec<_>>()
    );

    let message = channel
        .basic_get("jobs", BasicGetOptions { no_ack: true })
        .await?
        .ok_or("the queue is empty")?;
    println!(
        "received: {}",
        String::from_utf8_lossy(&message.delivery.data)
    );
    assert_eq!(message.delivery.data, b"hello from the embedding service");

    conn.close(200, "bye").await?;
    let c = broker.handle().counters();
    println!("published {}, delivered {}", c.published, c.delivered);
    broker.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_embedding_example_runs() {
        super::run().await.expect("the example runs");
    }
}
