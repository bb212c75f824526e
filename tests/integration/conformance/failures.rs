//! Edge inputs and failures: all-zero input, non-finite input (an error on
//! every rank naming the offender, nothing changed anywhere), and a rank that
//! never arrives (a timeout naming it, never a hang).

use super::lockstep::lockstep;
use crate::common::{Job, Rank, Synthetic, assert_bitwise_eq, initial_params, make_ranks};
use crate::reference::Reference;
use chronos_sync::{Backend, Error, Selection, SyncConfig, WireDtype};
use std::borrow::BorrowMut;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// All-zero parameters and updates, for every rule: the significance is 0,
/// forced syncs send zeros (Threshold with a zero RMS keeps every entry), and
/// parameters and accumulators stay +0.0, matching the reference.
pub fn all_zero_input<B: Backend>(backend: &Arc<B>) {
    let n = 70_000;
    for selection in [
        Selection::TopK { ratio: 0.01 },
        Selection::TopKApprox { ratio: 0.01, slack: 0.5 },
        Selection::Threshold { rel: 1.0 },
        Selection::Dense,
    ] {
        let config = SyncConfig::builder().max_accumulation_steps(2).selection(selection).build().unwrap();
        let job = Job::new(2, config, 4);
        let zeros = vec![0.0f32; n];
        let updates = Synthetic { scale: 0.0, ..Synthetic::new(1) };
        let s = lockstep(backend, &job, &zeros, updates);
        assert_eq!(s.syncs, 2, "{selection:?}: forced syncs at steps 2 and 4");
    }
}

/// Runs `f` on every rank's thread; results in rank order.
fn on_ranks<B: Backend, R: Send>(ranks: Vec<Rank<B>>, f: impl Fn(Rank<B>) -> R + Sync) -> Vec<R> {
    thread::scope(|s| {
        let joins: Vec<_> = ranks.into_iter().map(|r| s.spawn(|| f(r))).collect();
        joins.into_iter().map(|j| j.join().expect("rank thread panicked")).collect()
    })
}

/// Non-finite values in one rank's update, in two ranks' updates, or in one
/// rank's parameters: every rank gets `Error::NonFinite` naming exactly the
/// offenders, no rank's accumulator or parameters change (bitwise), the step
/// does not count, and the group carries on afterwards in agreement with the
/// reference, which skipped the failed steps.
pub fn non_finite_input_fails_every_rank_and_rolls_back<B: Backend>(backend: &Arc<B>) {
    let (world, n) = (4, 100_003);
    let config = SyncConfig::builder()
        .adaptive(false)
        .threshold(0.002)
        .selection(Selection::TopK { ratio: 0.01 })
        .wire_dtype(WireDtype::Bf16)
        .build()
        .unwrap();
    let theta0 = initial_params(71, n, 1.0);
    let updates = Synthetic::new(72);
    // Good steps 1-3, then three poisoned attempts, then good steps 4-5.
    // Poison: (rank, where, value); `where` = true poisons the parameters.
    let poisons: [&[(usize, bool, f32)]; 3] =
        [&[(2, false, f32::NAN)], &[(1, false, f32::INFINITY), (3, false, f32::NEG_INFINITY)], &[(0, true, f32::NAN)]];
    let expected: [&[usize]; 3] = [&[2], &[1, 3], &[0]];
    let ranks = make_ranks(backend, world, &config, &theta0, Duration::from_secs(30)).unwrap();
    let finals = on_ranks(ranks, |mut r| {
        let mut delta = vec![0.0f32; n];
        let good_step = |r: &mut Rank<B>, t: u64, delta: &mut Vec<f32>| {
            updates.fill(r.rank, t, delta);
            r.step_host(delta).unwrap_or_else(|e| panic!("rank {} step {t}: {e}", r.rank))
        };
        for t in 1..=3 {
            good_step(&mut r, t, &mut delta);
        }
        for (poison, want) in poisons.iter().zip(expected) {
            let theta_before = r.theta();
            let acc_before = r.acc();
            updates.fill(r.rank, 4, &mut delta);
            for &(rank, in_params, value) in poison.iter() {
                if rank == r.rank {
                    if in_params {
                        let mut bad = theta_before.clone();
                        bad[n / 2] = value;
                        r.sync.backend().upload(&bad, r.theta.borrow_mut()).unwrap();
                    } else {
                        delta[n - 1] = value;
                    }
                }
            }
            match r.step_host(&delta) {
                Err(Error::NonFinite { ranks }) => assert_eq!(ranks, want, "rank {}", r.rank),
                other => panic!("rank {}: expected NonFinite {want:?}, got {other:?}", r.rank),
            }
            assert_eq!(r.sync.steps(), 3, "rank {}: a failed step does not count", r.rank);
            assert_bitwise_eq(&format!("rank {} acc after {want:?}", r.rank), &r.acc(), &acc_before);
            let theta_after = r.theta();
            if poison.iter().any(|&(rank, p, _)| p && rank == r.rank) {
                assert!(theta_after[n / 2].is_nan(), "rank {}: parameters must be left as they were", r.rank);
                r.sync.backend().upload(&theta_before, r.theta.borrow_mut()).unwrap();
            } else {
                assert_bitwise_eq(&format!("rank {} theta after {want:?}", r.rank), &theta_after, &theta_before);
            }
        }
        for t in 4..=5 {
            good_step(&mut r, t, &mut delta);
        }
        (r.theta(), r.acc())
    });
    let mut reference = Reference::new(world, config, &theta0);
    for t in 1..=5 {
        let deltas: Vec<Vec<f32>> = (0..world).map(|r| updates.delta(r, t, n)).collect();
        let refs: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
        reference.step(&refs).unwrap();
    }
    for (r, (theta, acc)) in finals.iter().enumerate() {
        assert_bitwise_eq(&format!("rank {r} theta vs reference"), theta, &reference.theta);
        assert_bitwise_eq(&format!("rank {r} acc vs reference"), acc, &reference.acc[r]);
    }
}

/// A rank that never calls `step` makes the others fail with
/// `Error::Timeout` naming it, within about the timeout, with their state
/// unchanged; afterwards the group is broken for everyone, the late rank
/// included. Also covers a rank that stops after a few steps.
pub fn missing_rank_times_out<B: Backend>(backend: &Arc<B>) {
    let n = 10_000;
    // The timeout also bounds the ordinary steps before the rank goes
    // missing, where one rank's step can lag its peers' by the whole step
    // time: on the CUDA emulation under a loaded CI machine that exceeded
    // 300 ms. 5 s is far above any step here, so only the absent rank can
    // trip it (the case waits it out twice).
    let timeout = Duration::from_secs(5);
    let config = SyncConfig::default();
    let theta0 = initial_params(81, n, 1.0);
    let updates = Synthetic::new(82);
    for stop_after in [0u64, 3] {
        let ranks = make_ranks(backend, 3, &config, &theta0, timeout).unwrap();
        // The absent rank keeps its handle until the others are done, so the
        // failure is a timeout rather than a dropped peer.
        let done = Barrier::new(3);
        let outcomes = on_ranks(ranks, |mut r| {
            let mut delta = vec![0.0f32; n];
            for t in 1..=stop_after {
                updates.fill(r.rank, t, &mut delta);
                r.step_host(&delta).unwrap();
            }
            if r.rank == 2 {
                done.wait();
                // Arriving late: the group is already broken.
                let late = r.step_host(&delta).unwrap_err();
                return (None, late);
            }
            let theta_before = r.theta();
            let acc_before = r.acc();
            updates.fill(r.rank, stop_after + 1, &mut delta);
            let start = Instant::now();
            let err = r.step_host(&delta).unwrap_err();
            let elapsed = start.elapsed();
            assert_bitwise_eq("theta after timeout", &r.theta(), &theta_before);
            assert_bitwise_eq("acc after timeout", &r.acc(), &acc_before);
            assert_eq!(r.sync.steps(), stop_after);
            done.wait();
            (Some(elapsed), err)
        });
        // The first rank whose deadline passes fails the round for everyone
        // waiting in it, so only the longest wait is bounded below.
        let longest = outcomes.iter().filter_map(|o| o.0).max().unwrap();
        assert!(longest >= timeout, "every rank gave up before the timeout ({longest:?})");
        for (rank, (elapsed, err)) in outcomes.into_iter().enumerate() {
            match elapsed {
                Some(elapsed) => {
                    match &err {
                        Error::Timeout { missing, after, .. } => {
                            assert_eq!(missing, &[2], "rank {rank}");
                            assert_eq!(*after, timeout);
                        }
                        other => panic!("rank {rank}: expected a timeout naming rank 2, got {other}"),
                    }
                    assert!(elapsed < timeout + Duration::from_secs(5), "rank {rank}: took {elapsed:?}");
                }
                None => assert!(
                    matches!(err, Error::Collective(chronos_sync::CollectiveError::Broken { .. })),
                    "late rank: {err}"
                ),
            }
        }
    }
}

/// A finite update whose sum with the accumulator overflows f32 is refused
/// like non-finite input: every rank gets `Error::NonFinite` naming the rank
/// whose accumulator would overflow, and nothing is committed anywhere.
pub fn overflowing_accumulation_is_refused<B: Backend>(backend: &Arc<B>) {
    let (world, n) = (2, 4099);
    let config = SyncConfig::default();
    let theta0 = initial_params(81, n, 1.0);
    // Close to f32::MAX with low mantissa bits set, so its bf16 rounding
    // (down) leaves a positive residual in the accumulator after the sync.
    let big = f32::from_bits(0x7f00_1234);
    let ranks = make_ranks(backend, world, &config, &theta0, Duration::from_secs(30)).unwrap();
    on_ranks(ranks, |mut r| {
        let mut delta = vec![0.0f32; n];
        if r.rank == 0 {
            delta[7] = big;
        }
        let first = r.step_host(&delta).unwrap_or_else(|e| panic!("rank {} step 1: {e}", r.rank));
        assert!(first.synced, "rank {}: a huge update is significant", r.rank);
        let acc_before = r.acc();
        let theta_before = r.theta();
        if r.rank == 0 {
            assert!(acc_before[7] > 0.0, "the bf16 residual stays in the accumulator");
            delta[7] = f32::MAX;
        }
        match r.step_host(&delta) {
            Err(Error::NonFinite { ranks }) => assert_eq!(ranks, vec![0], "rank {}", r.rank),
            other => panic!("rank {}: expected NonFinite [0], got {other:?}", r.rank),
        }
        assert_eq!(r.sync.steps(), 1, "rank {}: the refused step does not count", r.rank);
        assert_bitwise_eq(&format!("rank {} acc", r.rank), &r.acc(), &acc_before);
        assert_bitwise_eq(&format!("rank {} theta", r.rank), &r.theta(), &theta_before);
    });
}
