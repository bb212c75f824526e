//! Adapter and device setup, and the plumbing every operation shares: error
//! scopes that turn wgpu's validation/out-of-memory reports into typed
//! [`BackendError`]s, device-lost tracking, and bounded waits for the device.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::transfer::TransferCounter;
use crate::error::{BackendError, Error, Result};

/// Backend name used in every error.
pub(super) const BACKEND: &str = "wgpu";

/// How to get a Vulkan adapter on a machine without a GPU.
pub(super) const LAVAPIPE_HINT: &str = "no Vulkan adapter is visible to wgpu; on a machine without a GPU install \
     Mesa's software driver lavapipe (Debian/Ubuntu: `apt-get install -y mesa-vulkan-drivers`) and check that \
     VK_ICD_FILENAMES / VK_DRIVER_FILES, if set, point at an existing ICD";

/// The device, its queue, and what the backend needs to know about them.
pub(super) struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Largest x (and y) dimension of a dispatch grid this backend uses.
    pub max_groups_x: u32,
    /// Bound on every wait for the device.
    pub timeout: Duration,
    /// Set by the device-lost callback; checked before every operation.
    lost: Arc<Mutex<Option<String>>>,
    /// Errors outside any error scope (should not happen; kept, never panics).
    uncaptured: Arc<Mutex<Option<String>>>,
    /// Host traffic, waits and object creations (see [`TransferCounter`]).
    pub counter: TransferCounter,
}

/// Where the map callback of one [`GpuContext::read_mapped`] leaves its
/// result. A state keeps one for its readbacks (states are stepped by one
/// thread at a time), so a readback allocates no channel.
pub(super) type MapSlot = Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>;

/// An empty [`MapSlot`].
pub(super) fn map_slot() -> MapSlot {
    Arc::new(Mutex::new(None))
}

/// The output of `fut`, which wgpu's native error scopes return ready:
/// polled once with a no-op waker (no allocation), and only when it is not
/// ready blocked on with `pollster`.
fn resolve<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => pollster::block_on(fut),
    }
}

impl GpuContext {
    /// Finds an adapter and opens a device with the adapter's own limits.
    pub fn new(max_groups_x: Option<u32>, timeout: Duration) -> Result<GpuContext> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        }))
        .map_err(|e| BackendError::NoAdapter { backend: BACKEND, hint: format!("{e}; {LAVAPIPE_HINT}") })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("chronos-sync"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| BackendError::Driver {
            backend: BACKEND,
            call: "request_device",
            message: e.to_string(),
        })?;

        let lost = Arc::new(Mutex::new(None));
        let lost_cb = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = lost_cb.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        let uncaptured = Arc::new(Mutex::new(None));
        let uncaptured_cb = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = uncaptured_cb.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        Ok(GpuContext::assemble(device, queue, info, limits, max_groups_x, timeout, lost, uncaptured))
    }

    /// A context on a device and queue the caller created and keeps using.
    /// The caller's device-lost callback and uncaptured-error handler are
    /// left alone (a device holds one of each), so a lost device shows up
    /// as the driver errors of later operations rather than as
    /// [`BackendError::DeviceLost`]; validation and out-of-memory errors of
    /// this backend's own work are still caught by its error scopes.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        max_groups_x: Option<u32>,
        timeout: Duration,
    ) -> GpuContext {
        let info = device.adapter_info();
        let limits = device.limits();
        let (lost, uncaptured) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
        GpuContext::assemble(device, queue, info, limits, max_groups_x, timeout, lost, uncaptured)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        limits: wgpu::Limits,
        max_groups_x: Option<u32>,
        timeout: Duration,
        lost: Arc<Mutex<Option<String>>>,
        uncaptured: Arc<Mutex<Option<String>>>,
    ) -> GpuContext {
        let hw_max = limits.max_compute_workgroups_per_dimension.max(1);
        let max_groups_x = max_groups_x.map_or(hw_max, |m| m.clamp(1, hw_max));
        GpuContext {
            device,
            queue,
            info,
            limits,
            max_groups_x,
            timeout,
            lost,
            uncaptured,
            counter: TransferCounter::default(),
        }
    }

    /// Fails with [`BackendError::DeviceLost`] once the device is gone.
    pub fn check_alive(&self) -> Result<()> {
        let lost = self.lost.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone());
        match lost {
            Some(reason) => Err(BackendError::DeviceLost { backend: BACKEND, reason }.into()),
            None => Ok(()),
        }
    }

    /// Runs `f` inside validation and out-of-memory error scopes; a captured
    /// error replaces `f`'s result. `bytes` is reported for out-of-memory.
    /// `what` names the operation (shader module for compile errors).
    pub fn scoped<T>(&self, what: &str, bytes: u64, compile: bool, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_alive()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = f();
        let v = resolve(validation.pop());
        let i = resolve(internal.pop());
        let o = resolve(oom.pop());
        self.check_alive()?;
        if o.is_some() {
            return Err(BackendError::OutOfMemory { backend: BACKEND, bytes }.into());
        }
        if let Some(e) = v.or(i) {
            let message = e.to_string();
            return Err(if compile {
                BackendError::Compile { backend: BACKEND, module: what.to_string(), message }
            } else {
                BackendError::Driver {
                    backend: BACKEND,
                    call: "wgpu validation",
                    message: format!("{what}: {message}"),
                }
            }
            .into());
        }
        if let Some(message) = self.uncaptured.lock().ok().and_then(|mut g| g.take()) {
            return Err(BackendError::Driver { backend: BACKEND, call: "wgpu", message }.into());
        }
        result
    }

    /// Blocks until all submitted work is done, at most [`GpuContext::timeout`].
    pub fn wait(&self, op: &'static str) -> Result<()> {
        self.counter.wait();
        match self.device.poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(self.timeout) }) {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => Err(Error::Timeout { op, missing: Vec::new(), after: self.timeout }),
            Err(e) => {
                self.check_alive()?;
                Err(BackendError::Driver { backend: BACKEND, call: "Device::poll", message: e.to_string() }.into())
            }
        }
    }

    /// Maps `buf[..size]` for reading once the queue is idle, hands the bytes
    /// to `read`, and unmaps. `slot` receives the map callback's result; no
    /// other readback may use it at the same time.
    pub fn read_mapped(
        &self,
        op: &'static str,
        buf: &wgpu::Buffer,
        size: u64,
        slot: &MapSlot,
        read: impl FnOnce(&[u8]),
    ) -> Result<()> {
        if size == 0 {
            read(&[]);
            return Ok(());
        }
        self.counter.d2h(size);
        if let Ok(mut s) = slot.lock() {
            *s = None;
        }
        let filled = Arc::clone(slot);
        buf.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            if let Ok(mut s) = filled.lock() {
                *s = Some(r);
            }
        });
        self.wait(op)?;
        let started = Instant::now();
        let mapped = loop {
            // The callback runs inside a poll; the wait above normally ran it.
            if let Some(r) = slot.lock().ok().and_then(|mut s| s.take()) {
                break r;
            }
            if started.elapsed() >= self.timeout {
                return Err(Error::Timeout { op, missing: Vec::new(), after: self.timeout });
            }
            let _ = self.device.poll(wgpu::PollType::Poll);
            std::thread::sleep(Duration::from_micros(50));
        };
        mapped.map_err(|e| BackendError::Driver {
            backend: BACKEND,
            call: "Buffer::map_async",
            message: e.to_string(),
        })?;
        {
            let view = buf.get_mapped_range(0..size).map_err(|e| BackendError::Driver {
                backend: BACKEND,
                call: "get_mapped_range",
                message: e.to_string(),
            })?;
            read(&view);
        }
        buf.unmap();
        Ok(())
    }

    /// A buffer of `size` bytes (at least 4) with `usage`.
    pub fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.counter.buffer();
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4).next_multiple_of(4),
            usage,
            mapped_at_creation: false,
        })
    }

    /// Queues a host-to-device write of `data` at `offset` (counted).
    pub fn write(&self, buf: &wgpu::Buffer, offset: u64, data: &[u8]) {
        if !data.is_empty() {
            self.counter.h2d(data.len() as u64);
            self.queue.write_buffer(buf, offset, data);
        }
    }

    /// Largest byte range one storage binding may cover.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Storage alignment for binding offsets.
    pub fn storage_align(&self) -> u64 {
        u64::from(self.limits.min_storage_buffer_offset_alignment.max(4))
    }

    /// Splits `groups` workgroups into a grid no wider than `max_groups_x`.
    pub fn grid(&self, groups: u32) -> (u32, u32) {
        if groups <= self.max_groups_x { (groups, 1) } else { (self.max_groups_x, groups.div_ceil(self.max_groups_x)) }
    }
}
