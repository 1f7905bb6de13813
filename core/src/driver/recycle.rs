//! Buffers for large inbound messages, used again once the application drops them.
//!
//! Every message a link reads is copied out of the read buffer into a buffer of its
//! own, which lives as long as any part of it (a stream item, a response) is held. A
//! link streaming large messages would otherwise allocate and free one such buffer per
//! message, often on different threads: the allocator then hands memory back to the
//! kernel and faults it in again, or moves it between its per-thread arenas.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Messages of at least this many bytes get a buffer that returns to the link.
const RECYCLE_MIN: usize = 16 * 1024;
/// The most a link keeps of buffers nobody holds, in bytes of capacity.
const RECYCLE_KEEP: usize = 1 << 20;
/// Buffers larger than this go back to the allocator.
const RECYCLE_MAX: usize = 256 * 1024;

/// Whether buffers of `capacity` bytes (or messages of that length) are recycled.
fn kept_size(capacity: usize) -> bool {
    (RECYCLE_MIN..=RECYCLE_MAX).contains(&capacity)
}

/// One link's buffers waiting to be used again.
#[derive(Debug, Default)]
pub(crate) struct Recycler {
    free: Mutex<Free>,
}

#[derive(Debug, Default)]
struct Free {
    bufs: Vec<Vec<u8>>,
    /// Total capacity of `bufs`.
    bytes: usize,
}

impl Recycler {
    fn free(&self) -> std::sync::MutexGuard<'_, Free> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer with room for `len` bytes: a kept one that is at most twice as
    /// large, the most recently returned first, or a new one.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        if kept_size(len) {
            let mut free = self.free();
            let fits = |b: &Vec<u8>| (len..=len.saturating_mul(2)).contains(&b.capacity());
            if let Some(i) = free.bufs.iter().rposition(fits) {
                let buf = free.bufs.remove(i);
                free.bytes -= buf.capacity();
                return buf;
            }
        }
        Vec::with_capacity(len)
    }

    /// `buf` as a message: a large one returns to this recycler when the last part of
    /// it is dropped.
    pub(crate) fn give(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        if !kept_size(buf.capacity()) {
            return buf.into();
        }
        Bytes::from_owner(Recycled {
            buf,
            home: self.clone(),
        })
    }

    /// Keeps `buf` for a later message if its size is one kept and there is room.
    pub(crate) fn put(&self, mut buf: Vec<u8>) {
        if !kept_size(buf.capacity()) {
            return;
        }
        let mut free = self.free();
        if free.bytes + buf.capacity() <= RECYCLE_KEEP {
            buf.clear();
            free.bytes += buf.capacity();
            free.bufs.push(buf);
        }
    }

    /// Bytes of capacity kept.
    pub(crate) fn kept_bytes(&self) -> usize {
        self.free().bytes
    }

    /// Gives every kept buffer back to the allocator.
    pub(crate) fn clear(&self) {
        let mut free = self.free();
        free.bufs = Vec::new();
        free.bytes = 0;
    }

    /// How many buffers are kept, and their total capacity.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> (usize, usize) {
        let free = self.free();
        (free.bufs.len(), free.bytes)
    }
}

/// A message's buffer, on its way back to its link's recycler.
struct Recycled {
    buf: Vec<u8>,
    home: Arc<Recycler>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.home.put(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: &Arc<Recycler>, len: usize, fill: u8) -> Bytes {
        let mut buf = r.take(len);
        buf.resize(len, fill);
        r.give(buf)
    }

    #[test]
    fn a_dropped_message_lends_its_buffer_to_the_next() {
        let r = Arc::new(Recycler::default());
        let a = message(&r, 64 << 10, 1);
        let at = a.as_ptr();
        let part = a.slice(10..20);
        drop(a);
        // A part still held keeps the buffer.
        let b = message(&r, 64 << 10, 2);
        assert_ne!(b.as_ptr(), at);
        assert_eq!(r.kept(), (0, 0));
        drop(part);
        assert_eq!(r.kept().0, 1);
        let c = message(&r, 40 << 10, 3);
        assert_eq!(c.as_ptr(), at, "the free buffer was not used again");
        assert!(c.iter().all(|&x| x == 3) && c.len() == 40 << 10);
        assert_eq!(r.kept(), (0, 0));
    }

    #[test]
    fn small_huge_and_far_too_large_buffers_are_not_kept() {
        let r = Arc::new(Recycler::default());
        drop(message(&r, RECYCLE_MIN - 1, 0));
        drop(message(&r, RECYCLE_MAX + 1, 0));
        r.put(Vec::with_capacity(RECYCLE_MIN - 1));
        r.put(Vec::with_capacity(RECYCLE_MAX + 1));
        assert_eq!(r.kept(), (0, 0));
        // A kept buffer serves messages from half its size up to its size.
        drop(message(&r, 100 << 10, 0));
        let small = r.take(49 << 10);
        assert!(
            small.capacity() < 100 << 10,
            "a buffer twice too large was lent"
        );
        assert_eq!(r.kept().0, 1);
        let big = r.take(101 << 10);
        assert!(big.capacity() >= 101 << 10);
        assert_eq!(r.kept().0, 1);
        assert_eq!(r.take(50 << 10).capacity(), 100 << 10);
        assert_eq!(r.kept(), (0, 0));
    }

    #[test]
    fn the_last_returned_that_fits_is_taken_first() {
        let r = Arc::new(Recycler::default());
        let held: Vec<Bytes> = [64 << 10, 64 << 10, 200 << 10, 200 << 10]
            .into_iter()
            .map(|len| message(&r, len, 0))
            .collect();
        let at: Vec<*const u8> = held.iter().map(|b| b.as_ptr()).collect();
        drop(held);
        let taken: Vec<Vec<u8>> = [64 << 10, 150 << 10, 150 << 10, 64 << 10]
            .into_iter()
            .map(|len| r.take(len))
            .collect();
        let got: Vec<*const u8> = taken.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(got, [at[1], at[3], at[2], at[0]]);
    }

    #[test]
    fn what_is_kept_is_bounded() {
        let r = Arc::new(Recycler::default());
        let held: Vec<Bytes> = (0..100).map(|i| message(&r, 64 << 10, i)).collect();
        drop(held);
        let (n, bytes) = r.kept();
        assert!(bytes <= RECYCLE_KEEP, "{bytes} bytes kept");
        assert_eq!(n, RECYCLE_KEEP / (64 << 10));
    }
}
