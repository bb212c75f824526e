//! The hyper-cleaning workload: hypergradient checks (finite differences,
//! unrolled reverse mode, ridge closed form) and a shortened run of the
//! three sync configurations.

use chronos_sync_cli::workload::data::{SplitSpec, load_digits, split_and_flip};
use chronos_sync_cli::workload::hypergrad::{
    CgOptions, InnerProblem, implicit_hypergradient, unrolled_hypergradient, validation_loss_grad,
};
use chronos_sync_cli::workload::model::{Design, FeatureMap, fit, gram_top_eigenvalue};
use chronos_sync_cli::workload::ridge::RidgeProblem;
use chronos_sync_cli::workload::rng::SplitMix64;

/// A small, well-conditioned instance on real digits: 40 noisy training and
/// 30 validation examples, raw pixels (650 parameters).
fn small_problem() -> (Design, Design, Vec<f64>, f64) {
    let data = load_digits().unwrap();
    let split = split_and_flip(&data, &SplitSpec::default()).unwrap();
    let idx: Vec<usize> = (0..40).collect();
    let train = FeatureMap::Raw.apply(&split.train.select(&idx));
    let val = FeatureMap::Raw.apply(&split.val.select(&(0..30).collect::<Vec<_>>()));
    let mut rng = SplitMix64::new(11);
    let lambda: Vec<f64> = (0..train.len()).map(|_| rng.normal()).collect();
    (train, val, lambda, 0.05)
}

fn inner_optimum(train: &Design, lambda: &[f64], mu: f64) -> Vec<f64> {
    let inner = InnerProblem { train, lambda, denom: train.len() as f64, mu };
    fit(train, &inner.weights(), inner.denom, mu, vec![0.0; train.param_len()], 3000)
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den
}

#[test]
fn implicit_hypergradient_matches_finite_differences() {
    let (train, val, lambda, mu) = small_problem();
    let theta = inner_optimum(&train, &lambda, mu);
    let inner = InnerProblem { train: &train, lambda: &lambda, denom: train.len() as f64, mu };
    let hg = implicit_hypergradient(&theta, &inner, &val, CgOptions { tol: 1e-12, max_iter: 2000 }, None, None);
    assert!(hg.cg_residual < 1e-10, "CG residual {}", hg.cg_residual);
    let h = 1e-4;
    let mut checked = 0;
    for i in [0usize, 3, 7, 19, 33] {
        let f_at = |delta: f64| {
            let mut l = lambda.clone();
            l[i] += delta;
            validation_loss_grad(&inner_optimum(&train, &l, mu), &val).0
        };
        let fd = (f_at(h) - f_at(-h)) / (2.0 * h);
        let err = (fd - hg.grad[i]).abs();
        assert!(err <= 1e-6 + 1e-4 * fd.abs(), "lambda_{i}: finite difference {fd:e}, implicit {:e}", hg.grad[i]);
        checked += usize::from(fd.abs() > 1e-6);
    }
    assert!(checked >= 3, "the checked coordinates must carry signal");
}

/// `dF/d(log mu) = -mu theta . v` against central differences of the
/// validation loss at the re-solved inner optimum.
#[test]
fn log_mu_hypergradient_matches_finite_differences() {
    let (train, val, lambda, mu) = small_problem();
    let theta = inner_optimum(&train, &lambda, mu);
    let inner = InnerProblem { train: &train, lambda: &lambda, denom: train.len() as f64, mu };
    let hg = implicit_hypergradient(&theta, &inner, &val, CgOptions { tol: 1e-12, max_iter: 2000 }, None, None);
    let h = 1e-4;
    let f_at = |log_mu: f64| validation_loss_grad(&inner_optimum(&train, &lambda, log_mu.exp()), &val).0;
    let fd = (f_at(mu.ln() + h) - f_at(mu.ln() - h)) / (2.0 * h);
    assert!(fd.abs() > 1e-4, "the check must carry signal: {fd:e}");
    assert!((fd - hg.log_mu).abs() <= 1e-6 + 1e-4 * fd.abs(), "finite difference {fd:e}, implicit {:e}", hg.log_mu);
    // A wrong sign or a missing factor mu would not pass.
    assert!((fd + hg.log_mu).abs() > 1e-3 * fd.abs());
}

#[test]
fn implicit_hypergradient_matches_the_unrolled_solver() {
    let (train, val, lambda, mu) = small_problem();
    let inner = InnerProblem { train: &train, lambda: &lambda, denom: train.len() as f64, mu };
    let smooth = 0.5 * gram_top_eigenvalue(&train, &inner.weights(), inner.denom, 100) + mu;
    let lr = 1.0 / smooth;
    let (theta_t, unrolled) = unrolled_hypergradient(&inner, &val, &vec![0.0; train.param_len()], 1500, lr);
    let implicit = implicit_hypergradient(&theta_t, &inner, &val, CgOptions { tol: 1e-12, max_iter: 2000 }, None, None);
    let err = rel_err(&implicit.grad, &unrolled);
    assert!(err < 1e-4, "relative difference {err:e}");
    // Few unrolled steps are far from the implicit (converged) answer: the
    // comparison above is not vacuous.
    let (_, short) = unrolled_hypergradient(&inner, &val, &vec![0.0; train.param_len()], 5, lr);
    assert!(rel_err(&short, &unrolled) > 1e-2);
}

#[test]
fn ridge_hypergradient_matches_closed_form_to_1e6() {
    let problem = RidgeProblem::diabetes(300, 3).unwrap();
    for rho in [-4.0, -1.0, 0.5, 2.0] {
        let closed = problem.hypergradient_closed_form(rho);
        let implicit = problem.hypergradient_implicit(rho, CgOptions { tol: 1e-14, max_iter: 500 });
        assert!((closed - implicit).abs() <= 1e-6 * closed.abs().max(1e-3), "rho {rho}: {closed:e} vs {implicit:e}");
        let h = 1e-5;
        let f = |r: f64| problem.val_loss_grad(&problem.solve_closed_form(r)).0;
        let fd = (f(rho + h) - f(rho - h)) / (2.0 * h);
        assert!((fd - closed).abs() <= 1e-6 * closed.abs().max(1e-3), "rho {rho}: fd {fd:e} vs {closed:e}");
    }
    assert!(RidgeProblem::diabetes(0, 3).is_err());
    assert!(RidgeProblem::diabetes(442, 3).is_err());
}

mod system_run {
    use chronos_sync::coordinator::OuterOptimizer;
    use chronos_sync_cli::workload::data::SplitSpec;
    use chronos_sync_cli::workload::metrics::RunMetrics;
    use chronos_sync_cli::workload::problem::{Problem, ProblemSpec, baselines};
    use chronos_sync_cli::workload::system::{
        OuterMode, OuterRule, SystemConfig, Variant, WarmStart, coordinator_config, run,
    };
    use chronos_sync_cli::workload::variants;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The shortened runs' problem: a smaller feature map, 3 workers, 15
    /// rounds of 8 steps and a 100-step final fit.
    fn shortened() -> (Arc<Problem>, SystemConfig) {
        let spec = ProblemSpec { split: SplitSpec::default(), features: 511, ..ProblemSpec::default() };
        let problem = Arc::new(Problem::digits(&spec).unwrap());
        let cfg = SystemConfig { workers: 3, rounds: 15, inner_steps: 8, final_steps: 100, ..SystemConfig::default() };
        (problem, cfg)
    }

    /// Runs `variants`, counting commits through the progress callback.
    fn run_all(problem: &Arc<Problem>, cfg: &SystemConfig, variants: &[Variant]) -> (Vec<RunMetrics>, u64) {
        let commits = Arc::new(AtomicU64::new(0));
        let runs = variants
            .iter()
            .map(|v| {
                let c = Arc::clone(&commits);
                run(problem, cfg, v, Arc::new(move || _ = c.fetch_add(1, Ordering::Relaxed))).unwrap()
            })
            .collect();
        (runs, commits.load(Ordering::Relaxed))
    }

    /// What holds for every run, whatever the thread interleaving.
    fn assert_structure(m: &RunMetrics, problem: &Problem, cfg: &SystemConfig) {
        assert_eq!(m.steps, 15 * 8 + 100);
        assert_eq!(m.hypergradients, 45);
        assert!(m.cg_iterations_mean >= 1.0 && m.cg_iterations_mean <= cfg.cg_iters as f64);
        // Rank 0's trace: one point per round and one after the final fit.
        assert_eq!(m.trace.len(), 16);
        assert!(m.trace.windows(2).all(|w| w[0].inner_step < w[1].inner_step));
        assert_eq!(m.trace.last().unwrap().test_accuracy, m.test_accuracy);
        // Two timescales: the lambdas every outer step, log mu every fifth.
        assert_eq!(m.timescale_updates.len(), 2, "{:?}", m.timescale_updates);
        assert_eq!(m.timescale_updates[0], (0, 1, m.outer_steps));
        assert_eq!(m.timescale_updates[1], (problem.train.len(), cfg.mu_every, m.outer_steps / cfg.mu_every));
        assert!(m.mu_final.is_finite() && m.mu_final > 0.0, "{}", m.mu_final);
        assert_eq!(m.accepted + m.rejected, 45);
        assert_eq!(m.bytes_per_worker.len(), 3);
        assert_eq!(m.bytes_per_worker.iter().sum::<u64>(), m.bytes_total);
        assert_eq!(m.syncs, m.syncs_triggered + m.syncs_forced);
        assert!(m.collective_calls == m.steps + 2 * m.syncs);
    }

    /// With synchronous outer steps the in-process run is reproducible (the
    /// inner collective is lock-step and the coordinator combines commits in
    /// a fixed order), so the accuracy band is a property of the method, not
    /// of a thread schedule.
    #[test]
    fn three_configurations_order_bytes_and_keep_accuracy() {
        let (problem, cfg) = shortened();
        let synchronous = |v: Variant| Variant { outer: OuterMode::Synchronous, ..v };
        let configurations = [
            variants::dense(),
            synchronous(variants::seed()),
            variants::best(0.02, 0.3, None, OuterMode::Synchronous),
            synchronous(variants::seed()),
        ];
        let (runs, commits) = run_all(&problem, &cfg, &configurations);
        let (dense, seed, best) = (&runs[0], &runs[1], &runs[2]);
        assert_eq!(commits, 4 * 15 * 3, "one commit per worker per round");
        // Reproducible to the bit: the same configuration twice.
        assert_eq!(runs[3].test_accuracy.to_bits(), seed.test_accuracy.to_bits());
        assert_eq!(
            (runs[3].bytes_total, runs[3].syncs, runs[3].mu_final),
            (seed.bytes_total, seed.syncs, seed.mu_final)
        );
        for m in &runs {
            assert_structure(m, &problem, &cfg);
            // Synchronous: every worker's commit in every outer step, never stale.
            assert_eq!(m.rejected, 0, "{}", m.name);
            assert_eq!(m.staleness.keys().copied().collect::<Vec<_>>(), vec![0], "{}", m.name);
            assert_eq!(m.outer_steps, 15, "{}", m.name);
            assert!(m.mu_rounds != cfg.mu, "{}: log mu never moved", m.name);
            assert_eq!(Some(m.mu_final), cfg.final_mu, "{}", m.name);
        }
        assert_eq!(dense.syncs, dense.steps);
        // Momentum factor masking clears exactly the entries sent, under the
        // sparse selections only (f32: nothing is left; bf16: under 1%).
        assert_eq!(dense.momentum_cleared, 0);
        for m in [seed, best] {
            assert!(
                m.entries_sent > 0 && m.momentum_cleared == m.entries_sent,
                "{}: {} of {}",
                m.name,
                m.momentum_cleared,
                m.entries_sent
            );
        }
        // Bytes: dense > seed and dense >= 10x best.
        assert!(seed.bytes_total < dense.bytes_total, "{} vs {}", seed.bytes_total, dense.bytes_total);
        assert!(best.bytes_total * 10 <= dense.bytes_total, "{} vs {}", best.bytes_total, dense.bytes_total);
        // Accuracy band: the sparse runs stay close to dense, and all beat
        // training on the noisy labels.
        // At the final fit's mu, as the command compares them.
        let noisy = baselines(&problem, cfg.final_mu.unwrap_or(cfg.mu), 150)[0].test_accuracy;
        for m in [seed, best] {
            assert!(
                (m.test_accuracy - dense.test_accuracy).abs() <= 0.03,
                "{}: {} vs dense {}",
                m.name,
                m.test_accuracy,
                dense.test_accuracy
            );
        }
        for m in &runs {
            assert!(m.test_accuracy >= noisy + 0.03, "{}: {} vs noisy {}", m.name, m.test_accuracy, noisy);
            assert!(m.detection.f1 > 0.7, "{}: F1 {}", m.name, m.detection.f1);
        }
    }

    /// The seed's bounded asynchrony: which commits are stale depends on the
    /// thread schedule (and the jitter sleeps), so only what holds for every
    /// schedule is asserted.
    #[test]
    fn bounded_asynchrony_keeps_its_bounds_under_any_schedule() {
        let (problem, cfg) = shortened();
        let seed = variants::seed();
        let OuterMode::BoundedAsync { max_staleness, min_commits, .. } = seed.outer else {
            panic!("the seed's outer loop is bounded-asynchronous");
        };
        let (runs, commits) = run_all(&problem, &cfg, &[seed]);
        let m = &runs[0];
        assert_eq!(commits, 15 * 3, "one commit per worker per round");
        assert_structure(m, &problem, &cfg);
        // Accepted commits are at most max_staleness behind; a commit further
        // behind is rejected (and counted at its staleness).
        let within: u64 = m.staleness.range(..=max_staleness).map(|(_, n)| n).sum();
        let beyond: u64 = m.staleness.range(max_staleness + 1..).map(|(_, n)| n).sum();
        assert_eq!(within, m.accepted, "{:?}", m.staleness);
        assert!(beyond <= m.rejected, "{:?}", m.staleness);
        assert!(
            m.outer_steps <= m.accepted / min_commits as u64,
            "{} outer steps, {} accepted",
            m.outer_steps,
            m.accepted
        );
        assert!(m.accepted >= 1 && m.outer_steps >= 1);
        // Ten classes: far above chance, whatever the staleness did.
        assert!(m.test_accuracy > 0.5, "{}", m.test_accuracy);
    }

    /// One worker makes the run deterministic (no thread interleaving): the
    /// warm starts must save CG iterations without changing what is solved.
    #[test]
    fn warm_starts_save_cg_iterations() {
        let spec = ProblemSpec { features: 255, ..ProblemSpec::default() };
        let problem = Arc::new(Problem::digits(&spec).unwrap());
        let at = |warm_start| {
            let cfg = SystemConfig {
                workers: 1,
                rounds: 10,
                inner_steps: 6,
                final_steps: 20,
                cg_iters: 500,
                cg_tol: 1e-3,
                warm_start,
                ..SystemConfig::default()
            };
            run(&problem, &cfg, &variants::dense(), Arc::new(|| {})).unwrap()
        };
        let none = at(WarmStart::None);
        let last = at(WarmStart::Last);
        let memory = at(WarmStart::Memory { k: 3 });
        for m in [&none, &last, &memory] {
            assert_eq!(m.hypergradients, 10);
            assert!(m.cg_iterations_mean < 500.0, "{}: CG hit its cap", m.name);
        }
        assert!(
            last.cg_iterations_mean < none.cg_iterations_mean,
            "{} vs {}",
            last.cg_iterations_mean,
            none.cg_iterations_mean
        );
        assert!(
            memory.cg_iterations_mean < none.cg_iterations_mean,
            "{} vs {}",
            memory.cg_iterations_mean,
            none.cg_iterations_mean
        );
        // Same tolerance, so the same answer up to it: the runs end close.
        assert!((last.test_accuracy - none.test_accuracy).abs() <= 0.02);
        assert!((memory.test_accuracy - none.test_accuracy).abs() <= 0.02);
    }

    /// Without timescales mu stays fixed and the outer vector is the lambdas alone.
    #[test]
    fn timescales_off_keeps_mu_fixed() {
        let spec = ProblemSpec { features: 63, ..ProblemSpec::default() };
        let problem = Arc::new(Problem::digits(&spec).unwrap());
        let cfg = SystemConfig {
            workers: 2,
            rounds: 6,
            inner_steps: 4,
            final_steps: 5,
            timescales: false,
            final_mu: None,
            ..SystemConfig::default()
        };
        let m = run(&problem, &cfg, &variants::dense(), Arc::new(|| {})).unwrap();
        assert_eq!((m.mu_rounds, m.mu_final), (cfg.mu, cfg.mu));
        assert_eq!(m.timescale_updates, vec![(0, 1, 6)]);
    }

    /// `final_mu` sets the final fit's L2 strength, learned mu or not, and
    /// only the final fit's: the rounds (and so the outer steps) are the
    /// same as without it, bit for bit, under a synchronous outer loop.
    #[test]
    fn final_mu_sets_only_the_final_fits_strength() {
        let spec = ProblemSpec { features: 63, ..ProblemSpec::default() };
        let problem = Arc::new(Problem::digits(&spec).unwrap());
        let mut variant = variants::dense();
        variant.outer = OuterMode::Synchronous;
        let cfg = SystemConfig { workers: 2, rounds: 6, inner_steps: 4, final_steps: 20, ..SystemConfig::default() };
        let plain = run(&problem, &cfg, &variant, Arc::new(|| {})).unwrap();
        let strong = SystemConfig { final_mu: Some(1e-2), ..cfg.clone() };
        let m = run(&problem, &strong, &variant, Arc::new(|| {})).unwrap();
        assert_eq!(m.mu_final, 1e-2);
        assert_eq!(m.mu_rounds.to_bits(), plain.mu_rounds.to_bits());
        assert_ne!(plain.mu_final, 1e-2);
        let rounds = |m: &RunMetrics| m.trace[..6].iter().map(|t| t.val_loss.to_bits()).collect::<Vec<_>>();
        assert_eq!(rounds(&m), rounds(&plain), "the rounds do not see final_mu");
        assert_ne!(m.trace[6].val_loss.to_bits(), plain.trace[6].val_loss.to_bits(), "the final fit does");
        for bad in [0.0, -1.0, f64::NAN] {
            let cfg = SystemConfig { final_mu: Some(bad), ..cfg.clone() };
            let err = run(&problem, &cfg, &variant, Arc::new(|| {})).unwrap_err();
            assert!(matches!(err, chronos_sync::Error::InvalidConfig { .. }), "{err}");
        }
    }

    #[test]
    fn bad_configuration_is_a_typed_error() {
        let spec = ProblemSpec { features: 0, ..ProblemSpec::default() };
        let problem = Arc::new(Problem::digits(&spec).unwrap());
        for cfg in [
            SystemConfig { workers: 0, ..SystemConfig::default() },
            SystemConfig { mu: 0.0, ..SystemConfig::default() },
            SystemConfig { momentum: 1.0, ..SystemConfig::default() },
            SystemConfig { jitter: f64::NAN, ..SystemConfig::default() },
            SystemConfig { cg_tol: 0.0, ..SystemConfig::default() },
            SystemConfig { cg_tol: 1.0, ..SystemConfig::default() },
            SystemConfig { mu_every: 0, ..SystemConfig::default() },
            SystemConfig { mu_lr: -1.0, ..SystemConfig::default() },
            SystemConfig { warm_start: WarmStart::Memory { k: 0 }, ..SystemConfig::default() },
            SystemConfig { outer_rule: OuterRule::Sgd { momentum: 1.0 }, ..SystemConfig::default() },
            SystemConfig { outer_rule: OuterRule::Sgd { momentum: f32::NAN }, ..SystemConfig::default() },
        ] {
            let err = run(&problem, &cfg, &variants::dense(), Arc::new(|| {})).unwrap_err();
            assert!(matches!(err, chronos_sync::Error::InvalidConfig { .. }), "{err}");
        }
        assert!(Problem::digits(&ProblemSpec { bandwidth: -1.0, ..ProblemSpec::default() }).is_err());
    }

    /// Each commit carries only its worker's shard of the example weights
    /// and an outer step applies the weighted mean of its commits, so SGD's
    /// rate is scaled by commits per step / workers: a round moves a weight
    /// as far under bounded asynchrony as under synchronous steps. Adam is
    /// scale-free and keeps the rate as given.
    #[test]
    fn sgd_outer_rate_is_per_round_under_every_outer_mode() {
        let spec = ProblemSpec { features: 0, ..ProblemSpec::default() };
        let problem = Problem::digits(&spec).unwrap();
        let cfg = SystemConfig { workers: 4, outer_lr: 100.0, ..SystemConfig::default() };
        let mut sync = variants::dense();
        sync.outer = OuterMode::Synchronous;
        let asynchronous = variants::seed();
        let OuterMode::BoundedAsync { min_commits, .. } = asynchronous.outer else {
            panic!("the seed is asynchronous")
        };
        assert_eq!(min_commits, 2);
        let rate = |cfg: &SystemConfig, v: &Variant| coordinator_config(&problem, cfg, v).unwrap().optimizer;
        assert_eq!(rate(&cfg, &sync), OuterOptimizer::Sgd { lr: 100.0, momentum: 0.9 });
        assert_eq!(rate(&cfg, &asynchronous), OuterOptimizer::Sgd { lr: 50.0, momentum: 0.9 });
        let adam = SystemConfig { outer_rule: OuterRule::Adam, outer_lr: 0.3, ..cfg };
        assert_eq!(rate(&adam, &asynchronous), OuterOptimizer::adam(0.3));
    }
}

mod command_line {
    use std::process::Command;

    fn bin() -> Command {
        Command::new(env!("CARGO_BIN_EXE_chronos-sync"))
    }

    #[test]
    fn help_documents_every_option() {
        let out = bin().args(["hyperclean", "--help"]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for opt in [
            "--out",
            "--seed",
            "--train",
            "--val",
            "--flip",
            "--features",
            "--bandwidth",
            "--workers",
            "--rounds",
            "--inner-steps",
            "--final-steps",
            "--mu",
            "--inner-lr",
            "--momentum",
            "--outer-optimizer",
            "--outer-lr",
            "--outer-momentum",
            "--cg-iters",
            "--cg-tol",
            "--warm-start",
            "--memory-k",
            "--timescales",
            "--mu-every",
            "--mu-lr",
            "--target-val-loss",
            "--final-weights",
            "--final-with-val",
            "--variants",
            "--jitter",
            "--best-ratio",
            "--best-threshold",
            "--baseline-iters",
            "--timeout-secs",
            "--momentum-masking",
            "--repeat",
            "--no-progress",
        ] {
            assert!(text.contains(opt), "--help lacks {opt}");
        }
    }

    #[test]
    fn bad_options_are_clear_errors() {
        for args in [
            &["hyperclean", "--workers", "0"][..],
            &["hyperclean", "--mu=-1"],
            &["hyperclean", "--flip", "1.5"],
            &["hyperclean", "--momentum", "1"],
            &["hyperclean", "--best-ratio", "abc"],
            &["hyperclean", "--warm-start", "sometimes"],
            &["hyperclean", "--timescales", "maybe"],
            &["hyperclean", "--cg-tol", "1"],
            &["hyperclean", "--mu-every", "0"],
            &["hyperclean", "--repeat", "0"],
            &["hyperclean", "--momentum-masking", "sometimes"],
            &["hyperclean", "--no-such-option"],
        ] {
            let out = bin().args(args).output().unwrap();
            assert!(!out.status.success(), "{args:?} succeeded");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("error"), "{args:?}: {err}");
        }
        // Sizes that do not fit the data set: a typed error from the library, exit status 1.
        let out = bin().args(["hyperclean", "--train", "1500", "--val", "297", "--no-progress"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no test example"));
    }

    /// `--repeat 2` on a tiny run: one directory per seed, then the summary
    /// paired by seed, in the table and in the JSON file.
    #[test]
    fn repeat_runs_every_seed_and_pairs_them() {
        let out = std::env::temp_dir().join(format!("chronos-hyperclean-repeat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let o = bin()
            .args(["hyperclean", "--repeat", "2", "--seed", "40", "--out"])
            .arg(&out)
            .args(["--features", "63", "--workers", "2", "--rounds", "2", "--inner-steps", "2"])
            .args(["--final-steps", "4", "--baseline-iters", "5", "--variants", "dense,best", "--no-progress"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
        assert!(stdout.contains("== seed 40 (1 of 2) ==") && stdout.contains("== seed 41 (2 of 2) =="), "{stdout}");
        assert!(stdout.contains("over 2 seeds (40, 41)") && stdout.contains("honest on"), "{stdout}");
        for seed in [40, 41] {
            assert!(out.join(format!("seed-{seed}/hyperclean.json")).is_file(), "seed {seed}'s report");
        }
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("hyperclean-repeat.json")).unwrap()).unwrap();
        assert_eq!(summary["seeds"], serde_json::json!([40, 41]));
        let configurations = summary["configurations"].as_array().unwrap();
        assert_eq!(configurations.len(), 2);
        // The first configuration against itself: 0 points and 1x on every seed.
        assert_eq!(configurations[0]["vs_first_points"]["values"], serde_json::json!([0.0, 0.0]));
        assert_eq!(configurations[0]["byte_reduction_vs_first"]["values"], serde_json::json!([1.0, 1.0]));
        for c in configurations {
            assert_eq!(c["test_accuracy"]["values"].as_array().unwrap().len(), 2);
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}
