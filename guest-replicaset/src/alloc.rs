//! The guest's memory allocator: a bump allocator over an arena that is part of the instance's
//! initial memory.
//!
//! The host runs every call on a fresh instance and throws it away afterwards, so nothing
//! allocated during a call ever needs to be handed back: freeing is a no-op and allocating is a
//! pointer bump. The arena lives in the zero-initialised data of the module, so a typical call
//! never grows linear memory; a call that needs more grows it page by page as any allocator
//! would. Growing is what made each call pay for changing page protections twice (grow, then
//! reset for the next instance), so a call that stays in the arena costs the host less too.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// Bytes of the arena: enough for a snapshot of several hundred pods.
const ARENA_BYTES: usize = 2 << 20;
/// The wasm page size.
const PAGE: usize = 64 << 10;

#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

/// Where the next allocation goes and where the current region ends (0, 0 before the first).
struct Cursor(UnsafeCell<(usize, usize)>);

// SAFETY: a wasm32 guest without threads has one thread of execution.
unsafe impl Sync for Arena {}
// SAFETY: as above.
unsafe impl Sync for Cursor {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));
static CURSOR: Cursor = Cursor(UnsafeCell::new((0, 0)));

/// See the module doc.
pub struct BumpAllocator;

impl BumpAllocator {
    /// A block of `size` bytes aligned to `align`, from the arena or, once it is used up, from
    /// newly grown memory; null when memory cannot grow (the host's limit).
    fn bump(&self, size: usize, align: usize) -> *mut u8 {
        // SAFETY: single-threaded (see above); the cursor is only touched here and in realloc.
        let cursor = unsafe { &mut *CURSOR.0.get() };
        if cursor.1 == 0 {
            let start = ARENA.0.get() as usize;
            *cursor = (start, start + ARENA_BYTES);
        }
        let start = (cursor.0 + align - 1) & !(align - 1);
        if start + size <= cursor.1 {
            cursor.0 = start + size;
            return start as *mut u8;
        }
        // Grow by whole pages, enough for this block; the new pages start a new region.
        let pages = (size + align).div_ceil(PAGE);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return core::ptr::null_mut();
        }
        let region = previous * PAGE;
        let start = (region + align - 1) & !(align - 1);
        *cursor = (start + size, region + pages * PAGE);
        start as *mut u8
    }
}

// SAFETY: every block handed out is fresh, aligned as asked and never handed out twice; blocks
// are never reused, so freeing nothing is sound.
unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.bump(layout.size(), layout.align())
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: single-threaded (see above).
        let cursor = unsafe { &mut *CURSOR.0.get() };
        // The last block handed out grows (or shrinks) in place when its region has room: a
        // growing Vec is the common case.
        if ptr as usize + layout.size() == cursor.0 && ptr as usize + new_size <= cursor.1 {
            cursor.0 = ptr as usize + new_size;
            return ptr;
        }
        let new = self.bump(new_size, layout.align());
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not overlap (the new
            // one was just bumped past the old).
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}
