//! Storage of a future's slot and of its listener nodes: `Payload`, two untagged words
//! whose content the state word's `Kind` (or a node's tag) records, and `Node`, one
//! listener of the list with its variant in the low bits of its link.

use super::*;

/// Two words of storage for the slot's content, whose type `Kind` records (and for a
/// listener node's). Larger under loom, whose `Thread` is.
#[repr(C, align(8))]
pub(super) struct Payload(pub(super) mem::MaybeUninit<[usize; PAYLOAD_WORDS]>);

#[cfg(not(cfutures_loom))]
pub(super) const PAYLOAD_WORDS: usize = 2;
#[cfg(cfutures_loom)]
pub(super) const PAYLOAD_WORDS: usize = 8;

impl Payload {
    pub(super) const fn empty() -> Payload {
        Payload(mem::MaybeUninit::uninit())
    }

    /// Stores `v` (whatever was there is overwritten, not dropped).
    pub(super) fn put<T>(&mut self, v: T) {
        const {
            assert!(mem::size_of::<T>() <= mem::size_of::<Payload>());
            assert!(mem::align_of::<T>() <= mem::align_of::<Payload>());
        }
        // SAFETY: the payload is large and aligned enough for a `T` (checked above).
        unsafe { self.0.as_mut_ptr().cast::<T>().write(v) }
    }

    /// # Safety
    /// The payload holds a `T` (its kind says so).
    pub(super) unsafe fn get<T>(&self) -> &T {
        // SAFETY: the caller's promise.
        unsafe { &*self.0.as_ptr().cast::<T>() }
    }

    /// Moves the `T` out; the payload is then logically empty.
    ///
    /// # Safety
    /// The payload holds a `T` (its kind says so), and the kind is changed so that it is
    /// never read or dropped again.
    pub(super) unsafe fn take<T>(&mut self) -> T {
        // SAFETY: the caller's promise.
        unsafe { self.0.as_ptr().cast::<T>().read() }
    }

    /// A task stored; `Err` with the task back when the box for a task other than `Call`
    /// and `Calls` cannot be allocated.
    pub(super) fn with_task(task: Task) -> Result<(Kind, Payload), Task> {
        let mut p = Payload::empty();
        let kind = match task {
            Task::Call(f, arg) => p.put_as((f, arg), Kind::Call),
            Task::Calls(f, values) => p.put_as((f, values), Kind::Calls),
            Task::Owned(owned) => p.put_as(owned, Kind::Owned),
            Task::Then(link) => p.put_as(link, Kind::Then),
            other => p.put_as(try_box(other)?, Kind::Boxed),
        };
        Ok((kind, p))
    }

    /// Stores `v` and returns `kind`, the tag the caller records for it.
    pub(super) fn put_as<T, K>(&mut self, v: T, kind: K) -> K {
        self.put(v);
        kind
    }

    /// Stores an outcome (never allocates); returns its kind.
    pub(super) fn put_outcome(&mut self, outcome: Outcome) -> Kind {
        match outcome {
            Outcome::Value(v) => self.put_as(v, Kind::Value),
            Outcome::Bytes(b) => self.put_as(b, Kind::Bytes),
            Outcome::Failed(e) => self.put_as(e, Kind::Failed),
            Outcome::Chunk(items) => self.put_as(items, Kind::Chunk),
            Outcome::Values(v) => self.put_as(v, Kind::Values),
            Outcome::Degraded(status, code) => self.put_as((status, code), Kind::Degraded),
            Outcome::Owned(v) => self.put_as(v, Kind::OwnedValue),
        }
    }

    /// Takes the task out.
    ///
    /// # Safety
    /// `kind` is this payload's kind, and is changed so that the payload is not read
    /// again.
    pub(super) unsafe fn take_task(&mut self, kind: Kind) -> Option<Task> {
        // SAFETY (each arm): the kind says what the payload holds (the caller's promise).
        match kind {
            Kind::Call => {
                let (f, arg) = unsafe { self.take::<(TaskFn, *mut c_void)>() };
                Some(Task::Call(f, arg))
            }
            Kind::Calls => {
                let (f, values) = unsafe { self.take::<(TaskFn, Box<Values>)>() };
                Some(Task::Calls(f, values))
            }
            Kind::Boxed => Some(*unsafe { self.take::<Box<Task>>() }),
            Kind::Owned => Some(Task::Owned(unsafe { self.take::<Box<OwnedTask>>() })),
            Kind::Then => Some(Task::Then(unsafe { self.take() })),
            _ => None,
        }
    }

    /// The outcome, borrowed.
    ///
    /// # Safety
    /// `kind` is this payload's kind.
    pub(super) unsafe fn outcome(&self, kind: Kind) -> Option<OutcomeRef<'_>> {
        // SAFETY (each arm): the kind says what the payload holds (the caller's promise).
        unsafe {
            Some(match kind {
                Kind::Value => OutcomeRef::Value(*self.get()),
                Kind::Bytes => OutcomeRef::Bytes(self.get()),
                Kind::Failed => OutcomeRef::Failed(self.get::<Box<Failure>>()),
                Kind::Chunk => OutcomeRef::Chunk(self.get::<Box<[Outcome]>>()),
                Kind::Values => OutcomeRef::Values(self.get::<Box<Values>>()),
                Kind::Degraded => {
                    let &(status, code) = self.get::<(cf_status, c_int)>();
                    OutcomeRef::Degraded(status, code)
                }
                Kind::OwnedValue => OutcomeRef::Value(self.get::<OwnedValue>().value),
                Kind::Empty | Kind::Call | Kind::Calls | Kind::Boxed | Kind::Owned | Kind::Then => {
                    return None;
                }
            })
        }
    }

    /// Drops the content.
    ///
    /// # Safety
    /// `kind` is this payload's kind, and is changed so that the payload is not read or
    /// dropped again.
    pub(super) unsafe fn drop_content(&mut self, kind: Kind) {
        // SAFETY (each arm): the kind says what the payload holds (the caller's promise).
        unsafe {
            match kind {
                Kind::Empty | Kind::Call | Kind::Value | Kind::Degraded => {}
                Kind::Calls => drop(self.take::<(TaskFn, Box<Values>)>()),
                Kind::Boxed => drop(self.take::<Box<Task>>()),
                Kind::Then => drop(self.take::<Shared<crate::rt::then::ThenLink>>()),
                Kind::Bytes => drop(self.take::<MallocBuf>()),
                Kind::Failed => drop(self.take::<Box<Failure>>()),
                Kind::Chunk => drop(self.take::<Box<[Outcome]>>()),
                Kind::Values => drop(self.take::<Box<Values>>()),
                Kind::Owned => drop(self.take::<Box<OwnedTask>>()),
                Kind::OwnedValue => drop(self.take::<OwnedValue>()),
            }
        }
    }
}

/// One registered listener; the list is newest first. 24 bytes (a 32-byte block): the
/// listener's variant is kept in the low bits of the link (nodes are 8-aligned) and its
/// payload untagged, as in a future's slot. (With a tagged `Listener` a node was 32
/// bytes, the same block size as a future, and a callback per future then cost W5 a
/// tenth of its rate in the allocator.)
pub(super) struct Node {
    /// The next node's address, with this node's variant (`UNPARK`...) in `TAG`.
    pub(super) link: *mut Node,
    pub(super) payload: Payload,
}

/// `Listener::Unpark`, payload `Thread`.
pub(super) const UNPARK: usize = 0;
/// `Listener::Notify`, payload `(Shared<WaitSet>, usize)`.
pub(super) const NOTIFY: usize = 1;
/// `Listener::Callback`, payload `(CallbackFn, *mut c_void)`.
pub(super) const CALLBACK: usize = 2;
/// `Listener::OwnedCallback`, payload `Box<OwnedCallback>`.
pub(super) const OWNED_CALLBACK: usize = 3;
/// `Listener::Hook`, payload `Hook`.
pub(super) const HOOK: usize = 4;
/// `Listener::Hook` in a node that lives inside the hook's own object (`HookNode`), so
/// that the list never frees it.
pub(super) const EMBEDDED_HOOK: usize = 5;
/// The link bits that hold the variant (a node is 8-byte aligned: three bits are free).
pub(super) const TAG: usize = 0b111;
const _: () = assert!(mem::align_of::<Node>() > TAG);

impl Node {
    pub(super) fn next(&self) -> *mut Node {
        self.link.map_addr(|a| a & !TAG)
    }

    pub(super) fn set_next(&mut self, next: *mut Node) {
        let tag = self.link.addr() & TAG;
        self.link = next.map_addr(|a| a | tag);
    }

    /// The listener, moved out.
    ///
    /// # Safety
    /// Called once per node (the payload is not read again).
    pub(super) unsafe fn take_listener(&mut self) -> Listener {
        // SAFETY (each arm): the tag says what the payload holds, set in `try_node`.
        unsafe {
            match self.link.addr() & TAG {
                UNPARK => Listener::Unpark(self.payload.take()),
                NOTIFY => {
                    let (set, index) = self.payload.take();
                    Listener::Notify(set, index)
                }
                CALLBACK => {
                    let (f, userdata) = self.payload.take();
                    Listener::Callback(f, userdata)
                }
                OWNED_CALLBACK => Listener::OwnedCallback(self.payload.take()),
                _ => Listener::Hook(self.payload.take()),
            }
        }
    }

    /// A bitwise view of the listener, to look at (never dropped: the node keeps it).
    pub(super) fn peek(&self) -> mem::ManuallyDrop<Listener> {
        // SAFETY: a bitwise copy, read once; the listener made from it is never dropped.
        let mut copy = unsafe { std::ptr::read(self) };
        // SAFETY: as above.
        mem::ManuallyDrop::new(unsafe { copy.take_listener() })
    }
}

/// Room for one listener node inside an engine object (a continuation's link, `rt::then`),
/// so that registering that object's one hook allocates nothing. The node is linked on
/// one future at most once (`Core::try_add_hook_in`); the hook it holds owns a reference
/// to the object, which keeps the room alive while it is linked, and the list takes the
/// hook out (`free_node`) before firing or dropping it.
pub(crate) struct HookNode(std::cell::UnsafeCell<mem::MaybeUninit<Node>>);

impl HookNode {
    pub(crate) const fn new() -> HookNode {
        HookNode(std::cell::UnsafeCell::new(mem::MaybeUninit::uninit()))
    }

    /// The node, holding `hook`, ready to link.
    ///
    /// # Safety
    /// Called once per room, by the only thread that knows it; the room outlives the
    /// node's time on a list (see the type's comment).
    pub(super) unsafe fn fill(&self, hook: Hook) -> *mut Node {
        let mut payload = Payload::empty();
        let tag = payload.put_as(hook, EMBEDDED_HOOK);
        let p = self.0.get().cast::<Node>();
        // SAFETY: the caller's promise: nobody else reads or writes the room.
        unsafe {
            p.write(Node {
                link: std::ptr::without_provenance_mut(tag),
                payload,
            })
        };
        p
    }
}

// SAFETY: the room is written once before it is linked, then accessed only under the
// future's listener lock or by the thread that unlinked it.
unsafe impl Sync for HookNode {}
// SAFETY: as above.
unsafe impl Send for HookNode {}

/// A node on the heap, or the listener back when there is no memory for it.
pub(super) fn try_node(listener: Listener) -> Result<*mut Node, Listener> {
    let mut payload = Payload::empty();
    let tag = match listener {
        Listener::Unpark(t) => payload.put_as(t, UNPARK),
        Listener::Notify(set, index) => payload.put_as((set, index), NOTIFY),
        Listener::Callback(f, userdata) => payload.put_as((f, userdata), CALLBACK),
        Listener::OwnedCallback(b) => payload.put_as(b, OWNED_CALLBACK),
        Listener::Hook(h) => payload.put_as(h, HOOK),
    };
    let mut node = Node {
        link: std::ptr::without_provenance_mut(tag),
        payload,
    };
    // SAFETY: `Node` is not zero-sized.
    let p = unsafe { alloc(Layout::new::<Node>()) }.cast::<Node>();
    if p.is_null() {
        // SAFETY: the node was never linked; its listener is taken once, here.
        return Err(unsafe { node.take_listener() });
    }
    // SAFETY: a fresh allocation with `Node`'s layout.
    unsafe { p.write(node) };
    Ok(p)
}

/// Takes a node back (from `try_node`, or a `HookNode`'s) and returns its listener.
///
/// # Safety
/// `p` came from `try_node` or `HookNode::fill` and is no longer linked anywhere.
pub(super) unsafe fn free_node(p: *mut Node) -> Listener {
    // SAFETY: made by `try_node` (or in a `HookNode`, which is not ours to free); its
    // listener is taken once, here, and the memory freed with the layout it was
    // allocated with.
    unsafe {
        let embedded = (*p).link.addr() & TAG == EMBEDDED_HOOK;
        let listener = (*p).take_listener();
        if !embedded {
            dealloc(p.cast(), Layout::new::<Node>());
        }
        listener
    }
}
