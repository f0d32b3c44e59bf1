//! The CPU sampler behind `inference.threads_follow_load` sees other
//! programs: two busy loops in child processes show up as about two cores,
//! while this process's own work does not count.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use voxloop::pipeline::cpu_share;

struct Hogs(Vec<Child>);

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn hog() -> Child {
    Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("start a busy loop")
}

/// Busy for `d` in this process (it must not count as another program).
fn spin(d: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
}

#[test]
fn the_sampler_counts_other_programs_and_not_this_one() {
    cpu_share::follow_load(true);
    // Our own busy thread for 2 s: the share of others stays low.
    spin(Duration::from_secs(2));
    let own = cpu_share::others();
    println!("others while this process spins: {own:.2} cores");

    let _hogs = Hogs(vec![hog(), hog()]);
    std::thread::sleep(Duration::from_secs(3));
    let busy = cpu_share::others();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("others with two busy loops: {busy:.2} cores of {cores}");
    // Two loops take about two cores (or all of a smaller machine). The
    // margin leaves room for the sampler's smoothing and a busy CI host.
    let expect = 2.0f32.min(cores as f32);
    assert!(
        busy >= expect * 0.6,
        "two busy loops seen as {busy:.2} cores (expected ~{expect})"
    );
    assert!(
        busy > own + 0.3,
        "busy loops ({busy:.2}) not above this process's own work ({own:.2})"
    );
    if cores <= 2 {
        assert_eq!(
            cpu_share::threads(2),
            1,
            "no core is free for a second thread"
        );
    }
}
