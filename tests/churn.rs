//! 200 sequential connect → send 1 s → disconnect cycles (every tenth one
//! vanishing without `bye`): the session gauge returns to 0 and the server's
//! memory stays flat.

mod common;

use std::time::Duration;

use common::{Server, clip48};
use voxloop::WIRE_RATE;
use voxloop::client::{Client, ClientOptions};

const CYCLES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_keeps_memory_flat() {
    let server = Server::start(&["--pipeline", "echo"], &[]);
    let clip = clip48("q06_hello.wav");
    let one_second = &clip[..(WIRE_RATE as usize).min(clip.len())];

    let mut rss = Vec::new();
    let mut aborted = 0;
    for cycle in 1..=CYCLES {
        let client = Client::connect(&server.url, ClientOptions::default())
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: connect: {e}"));
        // Faster than real time: this test is about resources, not pacing.
        client
            .send_pcm(one_second, 4.0)
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: send: {e}"));
        if cycle % 10 == 0 {
            client.abort().await;
            aborted += 1;
        } else {
            client.bye().await;
        }
        if cycle == 50 || cycle == CYCLES {
            // Let the server finish tearing down before measuring.
            assert!(
                server.sessions_drained(Duration::from_secs(5)).await,
                "sessions did not drain"
            );
            rss.push((cycle, server.rss_kib()));
        }
    }
    assert!(
        server.sessions_drained(Duration::from_secs(5)).await,
        "sessions did not drain to 0"
    );
    assert_eq!(server.metric("voxloop_sessions_total").await, CYCLES as f64);
    let (_, at50) = rss[0];
    let (_, at_end) = rss[1];
    let growth_mib = (at_end as f64 - at50 as f64) / 1024.0;
    println!(
        "churn RSS: cycle 50 = {:.1} MiB, cycle {CYCLES} = {:.1} MiB, growth {growth_mib:.2} MiB ({aborted} abrupt drops)",
        at50 as f64 / 1024.0,
        at_end as f64 / 1024.0
    );
    assert!(
        growth_mib < 10.0,
        "RSS grew {growth_mib:.2} MiB from cycle 50 to {CYCLES}"
    );
}
