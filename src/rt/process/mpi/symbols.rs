//! Function identity across processes that were not forked from one another: a function
//! pointer crosses an MPI link as (object file, offset), found with `dladdr`, and the
//! receiving rank adds the offset to where the same object is loaded there (address space
//! randomisation puts it elsewhere in every process).
//!
//! A code is one `u64`, so the frame format does not change: the top 24 bits are a hash
//! of the object's name (the canonical path of the main program, `/proc/self/exe`, or
//! the path `dladdr` reports for a shared object), the low 40 bits the offset from the
//! object's base. The receiver looks the hash up among its own loaded objects; no match,
//! or two objects with that hash, is a code that names nothing (a malformed frame).
//! Which threads encode and decode so is a thread-local switch (`Scope`): the proxy
//! threads of an MPI pool and a rank serving one; every other thread (the fork server's
//! proxies and workers) sends addresses as before.

use std::{
    cell::Cell,
    collections::HashMap,
    ffi::{CStr, c_int, c_void},
    sync::{Mutex, OnceLock},
};

const OFFSET_BITS: u32 = 40;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
}

/// While alive, this thread encodes and decodes function pointers as codes.
pub(crate) struct Scope(bool);

impl Scope {
    /// Turns codes on for this thread (until the scope drops).
    pub(crate) fn enter() -> Scope {
        Scope(ACTIVE.with(|a| a.replace(true)))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.0));
    }
}

/// `fn_out` of `wire`: the code of `f` on a thread inside a `Scope` (0, which names
/// nothing, for a function in no loaded object; `submit` refused those already).
#[inline]
pub(crate) fn encode_here(f: usize) -> Option<u64> {
    if !ACTIVE.with(|a| a.get()) {
        return None;
    }
    Some(encode(f).unwrap_or(0))
}

/// `fn_in` of `wire`: inside a `Scope`, the function a code names here (`Some(None)`:
/// none).
#[inline]
pub(crate) fn decode_here(code: u64) -> Option<Option<usize>> {
    if !ACTIVE.with(|a| a.get()) {
        return None;
    }
    Some(decode(code))
}

fn fnv24(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 24) ^ (h >> 48)) & 0xff_ffff
}

/// The base address of the main program and its name (its canonical path).
fn main_program() -> &'static (usize, Vec<u8>) {
    static MAIN: OnceLock<(usize, Vec<u8>)> = OnceLock::new();
    MAIN.get_or_init(|| {
        // SAFETY: AT_PHDR is the address of the main program's program headers, which
        // lie in its first mapping.
        let phdr = unsafe { libc::getauxval(libc::AT_PHDR) } as usize;
        let base = dl_base(phdr).map_or(0, |(b, _)| b);
        let name = std::fs::canonicalize("/proc/self/exe")
            .map(|p| p.into_os_string().into_encoded_bytes())
            .unwrap_or_default();
        (base, name)
    })
}

/// `dladdr`: the base of the object containing `addr`, and that object's file name.
fn dl_base(addr: usize) -> Option<(usize, Vec<u8>)> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only reads the address and fills `info`.
    let found = unsafe { libc::dladdr(addr as *const c_void, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: filled by a successful dladdr.
    let info = unsafe { info.assume_init() };
    if info.dli_fbase.is_null() {
        return None;
    }
    let name = if info.dli_fname.is_null() {
        Vec::new()
    } else {
        // SAFETY: a NUL-terminated string owned by the dynamic loader.
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_bytes()
            .to_vec()
    };
    Some((info.dli_fbase as usize, name))
}

/// The code of a function at `f`: `None` when `f` is in no loaded object (or more than
/// 2^40 bytes past its object's base). Objects seen before are looked up by base.
pub(crate) fn encode(f: usize) -> Option<u64> {
    static HASHES: Mutex<Option<HashMap<usize, u64>>> = Mutex::new(None);
    let (base, name) = dl_base(f)?;
    let off = (f - base) as u64;
    if off >> OFFSET_BITS != 0 {
        return None;
    }
    let mut cache = HASHES.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    let hash = *map.entry(base).or_insert_with(|| {
        let (main_base, main_name) = main_program();
        if base == *main_base {
            fnv24(main_name)
        } else {
            fnv24(&name)
        }
    });
    Some(hash << OFFSET_BITS | off)
}

/// The function a code names in this process, if exactly one loaded object has its
/// name's hash.
pub(crate) fn decode(code: u64) -> Option<usize> {
    if code == 0 {
        return None;
    }
    let hash = code >> OFFSET_BITS;
    let off = (code & ((1 << OFFSET_BITS) - 1)) as usize;
    let base = base_of(hash)?;
    Some(base + off)
}

/// The base of the one loaded object whose name hashes to `hash` (cached per hash).
fn base_of(hash: u64) -> Option<usize> {
    static BASES: Mutex<Option<HashMap<u64, Option<usize>>>> = Mutex::new(None);
    let mut cache = BASES.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if let Some(b) = map.get(&hash) {
        return *b;
    }
    let found = scan(hash);
    map.insert(hash, found);
    found
}

/// Walks the loaded objects for `hash`; `None` for no match or for two.
fn scan(hash: u64) -> Option<usize> {
    struct Search {
        hash: u64,
        found: Vec<usize>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info and our own `data`.
        let (info, s) = unsafe { (&*info, &mut *data.cast::<Search>()) };
        // The object's first loaded segment lies in its first mapping, whose start
        // `dladdr` reports as the object's base (what `encode` used).
        for i in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: `dlpi_phnum` headers at `dlpi_phdr`.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD {
                let at = info.dlpi_addr as usize + ph.p_vaddr as usize;
                if let Some((base, name)) = dl_base(at) {
                    let (main_base, main_name) = main_program();
                    let h = if base == *main_base {
                        fnv24(main_name)
                    } else {
                        fnv24(&name)
                    };
                    if h == s.hash && !s.found.contains(&base) {
                        s.found.push(base);
                    }
                }
                break;
            }
        }
        0
    }
    let mut s = Search {
        hash,
        found: Vec::new(),
    };
    // SAFETY: `visit` matches the callback type and only uses `s` during the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut s).cast()) };
    match s.found[..] {
        [one] => Some(one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn probe() -> i32 {
        7
    }

    /// A function of this program and one of libc round-trip; a heap address is in no
    /// object.
    #[test]
    fn codes_round_trip() {
        let f = probe as *const () as usize;
        let code = encode(f).expect("in the test binary");
        assert_eq!(decode(code), Some(f));
        let g = libc::getpid as *const () as usize;
        assert_eq!(decode(encode(g).expect("in libc")), Some(g));
        let heap = Box::new(5u64);
        assert_eq!(encode(&*heap as *const u64 as usize), None);
        assert_eq!(decode(0), None);
    }
}
