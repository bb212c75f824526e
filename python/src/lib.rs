//! `chronos_sync._native`: the chronos-sync engine for Python.
//!
//! An [`Engine`] is one vector's [`SparseSync`] on a shared [`CpuBackend`]
//! and a [`PyCollective`]: a [`Collective`] whose three operations call back
//! into a Python object (in `chronos_sync.torch`, one that runs
//! `torch.distributed` collectives on the job's own process group).
//!
//! - Inputs are any buffer-protocol objects of C-contiguous `float32`
//!   (`tensor.numpy()` of a CPU tensor shares its memory): the engine reads
//!   the update and writes the parameters in place, without a copy.
//! - The GIL is released for the whole step; the collective re-acquires it
//!   only inside its callbacks.
//! - Every failure is a Python exception carrying the crate's message
//!   ([`ChronosError`] and its subclasses); a panic is caught and raised as
//!   [`ChronosError`], never a crash. A Python exception raised by a callback
//!   is kept and chained as the `__cause__` of the exception the step raises.
#![warn(missing_docs)]

use chronos_sync::collective::{Collective, Gathered};
use chronos_sync::{CollectiveError, CpuBackend, Error, Selection, SparseSync, StepReport, SyncConfig, WireDtype};
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

create_exception!(chronos_sync, ChronosError, PyException, "A chronos-sync error (the crate's message).");
create_exception!(
    chronos_sync,
    NonFiniteError,
    ChronosError,
    "Non-finite input on some rank; the step was rolled back on every rank."
);
create_exception!(
    chronos_sync,
    RankFailedError,
    ChronosError,
    "The step failed on some rank; every rank raises it for the same step."
);
create_exception!(
    chronos_sync,
    SyncTimeoutError,
    ChronosError,
    "A collective call did not complete within the timeout."
);
create_exception!(
    chronos_sync,
    CollectiveFailedError,
    ChronosError,
    "A collective call failed (a peer left, the group broke)."
);
create_exception!(chronos_sync, ConfigError, ChronosError, "An invalid configuration or input.");

/// The CPU backend, shared by every engine of a process.
#[pyclass(module = "chronos_sync._native", frozen)]
pub struct Backend {
    inner: Arc<CpuBackend>,
}

#[pymethods]
impl Backend {
    /// A CPU backend with `threads` worker threads (default: rayon's).
    #[new]
    #[pyo3(signature = (threads=None))]
    fn new(threads: Option<usize>) -> PyResult<Self> {
        let inner = match threads {
            Some(t) => CpuBackend::with_threads(t).map_err(to_py)?,
            None => CpuBackend::new(),
        };
        Ok(Backend { inner: Arc::new(inner) })
    }

    fn __repr__(&self) -> String {
        format!("Backend({:?})", self.inner)
    }
}

/// Where a callback's Python exception waits until the step returns.
type PendingError = Arc<Mutex<Option<PyErr>>>;

/// A [`Collective`] over a Python object with `rank`, `world_size`,
/// `timeout` (seconds) and the methods `all_reduce_max(list[int]) ->
/// list[int]`, `all_gather_u64(int) -> list[int]` and
/// `all_gather_bytes(bytes, list[int]) -> bytes` (every rank's bytes in rank
/// order, concatenated).
pub struct PyCollective {
    comm: Py<PyAny>,
    rank: usize,
    world: usize,
    timeout: Duration,
    pending: PendingError,
}

impl PyCollective {
    fn call<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> PyResult<T>,
    ) -> Result<T, Error> {
        Python::with_gil(|py| {
            let comm = self.comm.bind(py);
            f(py, comm).map_err(|err| {
                let message = err.to_string();
                let lower = message.to_lowercase();
                let timed_out = err.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py)
                    || lower.contains("timed out")
                    || lower.contains("timeout");
                if let Ok(mut slot) = self.pending.lock() {
                    slot.get_or_insert(err);
                }
                if timed_out {
                    Error::Timeout { after: self.timeout, op, missing: Vec::new() }
                } else {
                    Error::Collective(CollectiveError::Broken { reason: format!("{op}: {message}") })
                }
            })
        })
    }
}

impl Collective for PyCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn all_reduce_max(&mut self, values: &mut [u32]) -> Result<(), Error> {
        let n = values.len();
        let out: Vec<u32> =
            self.call("all_reduce_max", |_, comm| comm.call_method1("all_reduce_max", (values.to_vec(),))?.extract())?;
        if out.len() != n {
            return Err(Error::LengthMismatch { what: "all_reduce_max result", expected: n, actual: out.len() });
        }
        values.copy_from_slice(&out);
        Ok(())
    }

    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> Result<(), Error> {
        let got: Vec<u64> =
            self.call("all_gather_u64", |_, comm| comm.call_method1("all_gather_u64", (value,))?.extract())?;
        if got.len() != self.world {
            return Err(Error::LengthMismatch {
                what: "all_gather_u64 result",
                expected: self.world,
                actual: got.len(),
            });
        }
        *out = got;
        Ok(())
    }

    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> Result<(), Error> {
        if lens.len() != self.world {
            return Err(Error::LengthMismatch {
                what: "all_gather_bytes lens",
                expected: self.world,
                actual: lens.len(),
            });
        }
        out.reset(lens)?;
        self.call("all_gather_bytes", |py, comm| {
            let result = comm.call_method1("all_gather_bytes", (PyBytes::new(py, send), lens.to_vec()))?;
            let bytes = result.downcast::<PyBytes>()?.as_bytes();
            let total: u64 = lens.iter().sum();
            if bytes.len() as u64 != total {
                return Err(PyValueError::new_err(format!(
                    "all_gather_bytes returned {} bytes, the counts add up to {total}",
                    bytes.len()
                )));
            }
            let mut at = 0usize;
            for &len in lens {
                let len = len as usize;
                out.push_rank(&bytes[at..at + len]);
                at += len;
            }
            Ok(())
        })
    }
}

/// One vector's sync engine (the spec's step) on a shared [`Backend`] and a
/// Python collective.
#[pyclass(module = "chronos_sync._native")]
pub struct Engine {
    sync: SparseSync<Arc<CpuBackend>, PyCollective>,
    pending: PendingError,
}

fn parse_selection(selection: &str, ratio: f64, slack: f64, rel: f64) -> PyResult<Selection> {
    Ok(match selection {
        "topk" => Selection::TopK { ratio },
        "topk_approx" => Selection::TopKApprox { ratio, slack },
        "threshold" => Selection::Threshold { rel },
        "dense" => Selection::Dense,
        other => {
            return Err(ConfigError::new_err(format!(
                "unknown selection {other:?} (topk, topk_approx, threshold, dense)"
            )));
        }
    })
}

fn parse_dtype(dtype: &str) -> PyResult<WireDtype> {
    Ok(match dtype {
        "f32" | "float32" => WireDtype::F32,
        "f16" | "float16" => WireDtype::F16,
        "bf16" | "bfloat16" => WireDtype::Bf16,
        other => return Err(ConfigError::new_err(format!("unknown wire dtype {other:?} (f32, f16, bf16)"))),
    })
}

/// A validated C-contiguous `float32` view of a Python buffer.
struct F32View {
    buf: PyBuffer<f32>,
}

impl F32View {
    fn new(obj: &Bound<'_, PyAny>, what: &str, writable: bool) -> PyResult<Self> {
        let buf = PyBuffer::<f32>::get(obj).map_err(|e| {
            PyValueError::new_err(format!("{what}: expected a float32 buffer (e.g. tensor.numpy()): {e}"))
        })?;
        if !buf.is_c_contiguous() {
            return Err(PyValueError::new_err(format!("{what}: the buffer must be C-contiguous")));
        }
        if writable && buf.readonly() {
            return Err(PyValueError::new_err(format!("{what}: the buffer is read-only")));
        }
        Ok(F32View { buf })
    }
    fn len(&self) -> usize {
        self.buf.item_count()
    }
    fn addr(&self) -> usize {
        self.buf.buf_ptr() as usize
    }
}

fn report_dict<'py>(py: Python<'py>, r: &StepReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("step", r.step)?;
    d.set_item("significance", r.significance)?;
    d.set_item("threshold", r.threshold)?;
    d.set_item("triggered", r.triggered)?;
    d.set_item("forced", r.forced)?;
    d.set_item("synced", r.synced)?;
    d.set_item("entries_sent", r.entries_sent)?;
    d.set_item("bytes_sent", r.bytes_sent)?;
    d.set_item("bytes_received", r.bytes_received)?;
    d.set_item("dense_equivalent_bytes", r.dense_equivalent_bytes)?;
    d.set_item("control_bytes", r.control_bytes)?;
    Ok(d)
}

#[pymethods]
impl Engine {
    /// An engine for vectors of `n` float32 values. `comm` is the collective
    /// object (see the module docs); the keyword arguments are
    /// `SyncConfig`'s fields (defaults: the spec's).
    #[new]
    #[pyo3(signature = (backend, comm, n, *, selection="topk", ratio=0.01, slack=0.25, rel=2.0,
        threshold=None, adaptive=None, min_threshold=None, max_threshold=None, warmup_steps=None,
        error_feedback=None, max_accumulation_steps=None, wire_dtype="bf16", apply_weight=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        backend: &Backend,
        comm: Py<PyAny>,
        n: usize,
        selection: &str,
        ratio: f64,
        slack: f64,
        rel: f64,
        threshold: Option<f64>,
        adaptive: Option<bool>,
        min_threshold: Option<f64>,
        max_threshold: Option<f64>,
        warmup_steps: Option<u64>,
        error_feedback: Option<bool>,
        max_accumulation_steps: Option<u64>,
        wire_dtype: &str,
        apply_weight: Option<f32>,
    ) -> PyResult<Self> {
        let mut b = SyncConfig::builder().selection(parse_selection(selection, ratio, slack, rel)?);
        b = b.wire_dtype(parse_dtype(wire_dtype)?);
        if let Some(v) = threshold {
            b = b.threshold(v);
        }
        if let Some(v) = adaptive {
            b = b.adaptive(v);
        }
        if let Some(v) = min_threshold {
            b = b.min_threshold(v);
        }
        if let Some(v) = max_threshold {
            b = b.max_threshold(v);
        }
        if let Some(v) = warmup_steps {
            b = b.warmup_steps(v);
        }
        if let Some(v) = error_feedback {
            b = b.error_feedback(v);
        }
        if let Some(v) = max_accumulation_steps {
            b = b.max_accumulation_steps(v);
        }
        if let Some(v) = apply_weight {
            b = b.apply_weight(v);
        }
        let config = b.build().map_err(to_py)?;
        let c = comm.bind(py);
        let rank: usize = c.getattr("rank")?.extract()?;
        let world: usize = c.getattr("world_size")?.extract()?;
        let timeout_s: f64 = c.getattr("timeout")?.extract()?;
        if !(timeout_s.is_finite() && timeout_s > 0.0) {
            return Err(ConfigError::new_err(format!(
                "comm.timeout must be a positive number of seconds, got {timeout_s}"
            )));
        }
        let pending: PendingError = Arc::default();
        let collective = PyCollective {
            comm,
            rank,
            world,
            timeout: Duration::from_secs_f64(timeout_s),
            pending: Arc::clone(&pending),
        };
        let backend = Arc::clone(&backend.inner);
        let sync = guard(|| SparseSync::new(backend, collective, n, config))?;
        Ok(Engine { sync, pending })
    }

    /// One step: adds `delta` to the accumulator, votes, and when the group
    /// syncs exchanges the selected entries and adds their weighted sum to
    /// `params` in place. Both are C-contiguous float32 buffers of `n`
    /// values, not overlapping. Returns the step's report as a dict.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        delta: &Bound<'py, PyAny>,
        params: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = F32View::new(delta, "delta", false)?;
        let p = F32View::new(params, "params", true)?;
        let n = self.sync.len();
        for (what, view) in [("delta", &d), ("params", &p)] {
            if view.len() != n {
                return Err(PyValueError::new_err(format!("{what}: expected {n} float32 values, got {}", view.len())));
            }
        }
        let (da, pa) = (d.addr(), p.addr());
        let bytes = n * 4;
        if n > 0 && da < pa + bytes && pa < da + bytes {
            return Err(PyValueError::new_err("delta and params must not overlap"));
        }
        self.clear_pending();
        let sync = &mut self.sync;
        let result = py.allow_threads(|| {
            // SAFETY: both buffers are held (and so kept alive and pinned) by
            // the PyBuffer views for the whole call, are C-contiguous float32
            // of n values, and do not overlap (checked above); params is
            // writable. Python code that writes them concurrently while the
            // GIL is released races as it would with any in-place C call.
            let delta = unsafe { std::slice::from_raw_parts(da as *const f32, n) };
            let params = unsafe { std::slice::from_raw_parts_mut(pa as *mut f32, n) };
            catch_unwind(AssertUnwindSafe(|| sync.step(delta, params)))
        });
        drop((d, p));
        let report = self.finish(py, result)?;
        report_dict(py, &report)
    }

    /// Copies the committed accumulator (the unsent residual) into `out`, a
    /// writable C-contiguous float32 buffer of `n` values.
    fn read_accumulator(&self, out: &Bound<'_, PyAny>) -> PyResult<()> {
        let o = F32View::new(out, "out", true)?;
        let n = self.sync.len();
        if o.len() != n {
            return Err(PyValueError::new_err(format!("out: expected {n} float32 values, got {}", o.len())));
        }
        // SAFETY: as in `step`; the GIL is held throughout.
        let dst = unsafe { std::slice::from_raw_parts_mut(o.addr() as *mut f32, n) };
        guard(|| self.sync.read_accumulator(dst))
    }

    /// The engine's whole state (accumulator, counters, configuration
    /// fingerprint) as checkpoint bytes (`docs/checkpoint-format.md`).
    fn checkpoint<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = guard(|| self.sync.checkpoint())?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Restores a state saved by `checkpoint` into an engine of the same
    /// shape and configuration; the bytes are validated as untrusted.
    fn restore(&mut self, bytes: &[u8]) -> PyResult<()> {
        guard(|| self.sync.restore(bytes))
    }

    /// Vector length.
    #[getter]
    fn n(&self) -> usize {
        self.sync.len()
    }
    /// Steps taken.
    #[getter]
    fn steps(&self) -> u64 {
        self.sync.steps()
    }
    /// Steps since the last sync.
    #[getter]
    fn steps_since_sync(&self) -> u64 {
        self.sync.steps_since_sync()
    }
    /// True after an apply failed part-way; restore to recover.
    #[getter]
    fn is_diverged(&self) -> bool {
        self.sync.as_group().is_diverged()
    }
}

impl Engine {
    fn clear_pending(&self) {
        if let Ok(mut slot) = self.pending.lock() {
            *slot = None;
        }
    }

    fn finish(&self, py: Python<'_>, result: std::thread::Result<Result<StepReport, Error>>) -> PyResult<StepReport> {
        let cause = self.pending.lock().ok().and_then(|mut slot| slot.take());
        let err = match result {
            Ok(Ok(report)) => return Ok(report),
            Ok(Err(e)) => to_py(e),
            Err(panic) => panic_to_py(panic),
        };
        if let Some(cause) = cause {
            err.set_cause(py, Some(cause));
        }
        Err(err)
    }
}

/// Runs `f`, turning a crate error or a panic into a Python exception.
fn guard<T>(f: impl FnOnce() -> Result<T, Error>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(to_py),
        Err(panic) => Err(panic_to_py(panic)),
    }
}

fn panic_to_py(panic: Box<dyn std::any::Any + Send>) -> PyErr {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    ChronosError::new_err(format!("internal error (a bug in chronos-sync): {msg}"))
}

/// The crate's error as the matching Python exception, with its message.
fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::NonFinite { .. } => NonFiniteError::new_err(msg),
        Error::RankFailed { .. } => RankFailedError::new_err(msg),
        Error::Timeout { .. } => SyncTimeoutError::new_err(msg),
        Error::Collective(_) => CollectiveFailedError::new_err(msg),
        Error::InvalidConfig { .. } | Error::LengthMismatch { .. } => ConfigError::new_err(msg),
        _ => ChronosError::new_err(msg),
    }
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Backend>()?;
    m.add_class::<Engine>()?;
    m.add("ChronosError", py.get_type::<ChronosError>())?;
    m.add("NonFiniteError", py.get_type::<NonFiniteError>())?;
    m.add("RankFailedError", py.get_type::<RankFailedError>())?;
    m.add("SyncTimeoutError", py.get_type::<SyncTimeoutError>())?;
    m.add("CollectiveFailedError", py.get_type::<CollectiveFailedError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    Ok(())
}
