//! W in-process ranks driven in lock step, for timing multi-rank steps.
//!
//! Rank 0 runs on the calling (timing) thread; ranks 1..W each own a thread
//! that waits for a "run `iters` iterations" command. The ranks' own
//! collective calls keep them in step; the measured time is rank 0's, plus
//! the wait for the others to report back.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One rank's iteration (one step). Panics on error: a failing bench must stop.
pub type RankFn = Box<dyn FnMut() + Send>;

/// How long a rank may take to report back before the bench gives up.
const REPORT_TIMEOUT: Duration = Duration::from_secs(600);

enum Cmd {
    Run(u64),
    Stop,
}

/// The group of rank threads.
pub struct Ranks {
    rank0: RankFn,
    commands: Vec<Sender<Cmd>>,
    threads: Vec<JoinHandle<()>>,
    done: Receiver<()>,
}

impl Ranks {
    /// Starts one thread per rank 1..W; `fns[r]` is rank r's iteration.
    pub fn new(mut fns: Vec<RankFn>) -> Ranks {
        assert!(!fns.is_empty(), "at least one rank");
        let rank0 = fns.remove(0);
        let (done_tx, done) = channel();
        let mut commands = Vec::new();
        let mut threads = Vec::new();
        for (i, mut f) in fns.into_iter().enumerate() {
            let (tx, rx) = channel::<Cmd>();
            let done_tx = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("bench-rank-{}", i + 1))
                .spawn(move || {
                    while let Ok(Cmd::Run(iters)) = rx.recv() {
                        for _ in 0..iters {
                            f();
                        }
                        if done_tx.send(()).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn rank thread");
            commands.push(tx);
            threads.push(handle);
        }
        Ranks { rank0, commands, threads, done }
    }

    /// Runs `iters` iterations on every rank; returns rank 0's time
    /// including the wait for the others.
    pub fn run(&mut self, iters: u64) -> Duration {
        for tx in &self.commands {
            tx.send(Cmd::Run(iters)).expect("rank thread alive");
        }
        let start = Instant::now();
        for _ in 0..iters {
            (self.rank0)();
        }
        for _ in &self.commands {
            self.done.recv_timeout(REPORT_TIMEOUT).expect("a rank thread failed or hung");
        }
        start.elapsed()
    }
}

impl Drop for Ranks {
    fn drop(&mut self) {
        for tx in &self.commands {
            let _ = tx.send(Cmd::Stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
