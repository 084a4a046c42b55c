//! The channel-wide prefetch (`basic.qos` with `global=true`) and `basic.qos` argument checks.

use warren_amqp_codec::{ReplyCode, Scope};
use warren_queue::channel::{ChannelCredit, check_qos};

#[test]
fn limit_zero_is_unlimited() {
    let c = ChannelCredit::new();
    assert_eq!(c.limit(), 0);
    for _ in 0..10_000 {
        assert!(c.try_acquire());
    }
    assert_eq!(c.used(), 10_000);
    assert!(!c.release(10_000), "nobody was refused");
    assert_eq!(c.used(), 0);
}

#[test]
fn acquire_refuses_at_the_limit_and_release_wakes_once() {
    let c = ChannelCredit::new();
    assert!(!c.set_limit(2));
    assert_eq!(c.limit(), 2);
    assert!(c.try_acquire());
    assert!(c.try_acquire());
    assert!(!c.try_acquire());
    assert!(!c.try_acquire());
    assert_eq!(c.used(), 2);
    assert!(c.release(1), "refused, and room now");
    assert_eq!(c.used(), 1);
    assert!(!c.release(1), "no refusal since the last wake-up");
    assert_eq!(c.used(), 0);
}

#[test]
fn release_without_a_refusal_does_not_wake() {
    let c = ChannelCredit::new();
    c.set_limit(3);
    assert!(c.try_acquire());
    assert!(c.try_acquire());
    assert!(!c.release(2));
}

#[test]
fn release_of_nothing_does_not_wake() {
    let c = ChannelCredit::new();
    c.set_limit(1);
    assert!(c.try_acquire());
    assert!(!c.try_acquire());
    assert!(!c.release(0));
    assert!(c.release(1));
}

#[test]
fn release_while_still_at_the_limit_keeps_the_refusal_for_later() {
    let c = ChannelCredit::new();
    c.set_limit(3);
    for _ in 0..3 {
        assert!(c.try_acquire());
    }
    assert!(!c.set_limit(1), "lowering below the use wakes nobody");
    assert!(!c.try_acquire());
    assert!(!c.release(1), "2 used, limit 1: no room");
    assert!(!c.release(1), "1 used, limit 1: no room");
    assert!(c.release(1), "room at last");
    assert!(c.try_acquire());
    assert!(!c.try_acquire());
}

#[test]
fn release_never_goes_below_zero() {
    let c = ChannelCredit::new();
    c.set_limit(1);
    assert!(c.try_acquire());
    assert!(!c.try_acquire());
    assert!(c.release(5));
    assert_eq!(c.used(), 0);
    assert!(c.try_acquire());
    assert!(!c.try_acquire());
}

#[test]
fn raising_the_limit_wakes_the_refused() {
    let c = ChannelCredit::new();
    c.set_limit(1);
    assert!(c.try_acquire());
    assert!(!c.try_acquire());
    assert!(c.set_limit(2));
    assert!(c.try_acquire());
    assert!(!c.try_acquire());
    assert!(c.set_limit(0), "no limit at all");
    assert!(c.try_acquire());
    assert_eq!(c.used(), 3);
    assert!(!c.set_limit(0), "nobody refused since");
}

#[test]
fn raising_the_limit_without_room_does_not_wake() {
    let c = ChannelCredit::new();
    c.set_limit(1);
    assert!(c.try_acquire());
    assert!(!c.try_acquire());
    c.set_limit(3);
    // set_limit(3) woke (room): take the room, be refused again.
    assert!(c.try_acquire());
    assert!(c.try_acquire());
    assert!(!c.try_acquire());
    assert!(!c.set_limit(3), "3 used, limit 3");
    assert!(!c.set_limit(2), "still no room");
    assert!(c.set_limit(4));
}

#[test]
fn prefetch_size_zero_is_accepted() {
    assert!(check_qos(0).is_ok());
}

#[test]
fn prefetch_size_is_not_implemented() {
    let e = check_qos(4096).unwrap_err();
    assert_eq!(e.code, ReplyCode::NotImplemented);
    assert_eq!(e.code as u16, 540);
    assert_eq!(e.text, "prefetch_size!=0 (4096)");
    assert_eq!(e.scope, Scope::Connection);
    assert_eq!(e.reply_text(), "NOT_IMPLEMENTED - prefetch_size!=0 (4096)");
    assert_eq!(
        check_qos(u32::MAX).unwrap_err().text,
        "prefetch_size!=0 (4294967295)"
    );
}

/// A queue refused for credit waits for a `release` that returns true; if the release slips
/// in between the refusal and the refusal being recorded, nobody would wake it. Two threads
/// play it many times: the consumer side takes the one unit as soon as it can, the channel
/// side gives it back, and the consumer side, when refused, only retries once woken.
#[test]
fn a_release_racing_a_refusal_never_loses_the_wake_up() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    const ROUNDS: u32 = 50_000;
    let credit = ChannelCredit::new();
    credit.set_limit(1);
    let woken = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if credit.used() == 1 && credit.release(1) {
                    woken.store(true, Ordering::SeqCst);
                }
                std::hint::spin_loop();
            }
        });
        for round in 0..ROUNDS {
            while !credit.try_acquire() {
                let start = Instant::now();
                while !woken.swap(false, Ordering::SeqCst) {
                    if start.elapsed() > Duration::from_secs(30) {
                        done.store(true, Ordering::SeqCst);
                        panic!(
                            "round {round}: refused, room now (used {}), and never woken",
                            credit.used()
                        );
                    }
                    std::thread::yield_now();
                }
            }
        }
        done.store(true, Ordering::SeqCst);
    });
}
