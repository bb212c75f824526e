//! [`WgpuBuffer`]: a dense `f32` vector resident in the device's memory.

/// A dense `f32` vector on one [`super::WgpuBackend`]'s device. Created by
/// `Backend::alloc`; data moves only through `upload`/`download`. Using it
/// with another backend instance is refused with a typed error.
#[derive(Debug)]
pub struct WgpuBuffer {
    pub(super) buffer: wgpu::Buffer,
    pub(super) len: usize,
    /// Id of the backend that allocated it.
    pub(super) owner: u64,
}

impl WgpuBuffer {
    /// Elements in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The underlying wgpu buffer (the caller's own for one from
    /// [`super::WgpuBackend::wrap_buffer`]), e.g. to bind it in the
    /// framework's own passes between steps.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// Gives the underlying wgpu buffer back.
    pub fn into_inner(self) -> wgpu::Buffer {
        self.buffer
    }
}

/// Usage of every vector buffer: bound as storage, and copy source/target.
pub(super) fn vector_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}
