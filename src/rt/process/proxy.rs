//! The proxy thread: drives one worker through its `Link`, keeping up to `PIPELINE`
//! tasks in flight, finishing futures from the answers in order, and replacing a worker
//! that dies or is retired; workers come from a `Transport`, never from `fork` directly.

use super::{
    arena::Slot,
    deadline::{Registry, deadline_of, deadline_timeout},
    io::{read_vec, send_counted},
    link::{Link, Sent},
    wire::{
        K_INIT_FAILED, K_READY, Reader, decode_outcome, encode_small, read_header, recv_outcome,
    },
};
use crate::rt::{
    context::{Raised, UserError},
    future::CoreRef,
    owned::{Where, deadline_outcome},
    pool::Pool,
    sync::{AtomicU32, Ordering},
    task::{Failure, Outcome, Task},
};
use crate::status::{CF_BROKEN, CF_DEADLINE, CF_NO_MEMORY};
use std::{cell::RefCell, collections::VecDeque, ffi::CString, io};

/// Most tasks a proxy keeps in flight in its worker.
const PIPELINE: usize = 8;

/// How many times a proxy tries to start a worker that dies before it is ready.
const START_ATTEMPTS: usize = 3;

/// Where a proxy's workers come from, and where they go: all that the proxy needs of a
/// transport (today the fork server, `server::ForkServer`).
pub(crate) trait Transport: Sync {
    /// Starts a worker named `name` and returns the parent's end of its link. The worker
    /// is not ready until its first frame (`Proxy::ready`).
    fn start(&self, name: &str) -> io::Result<Link>;
    /// Ends the worker `id`, whose link the caller has just dropped: at once (`kill`, its
    /// channel broke) or as it leaves at EOF (retired); then reaps it. How it ended, when
    /// known ("was killed by signal 9 (SIGKILL)").
    fn end(&self, id: i32, kill: bool) -> Option<String>;
}

/// Why a new worker did not become ready.
enum StartError {
    /// Its initializer failed (or, with an initializer configured, it died first).
    InitFailed(UserError),
    /// It died before it was ready, with no initializer configured: lost, not failed.
    Died(String),
}

/// The proxy thread's own state: its name for replacements, and its worker (`None`
/// between a death or retirement and the next task).
struct ProxyThread {
    name: String,
    link: Option<Link>,
}

thread_local! {
    static PROXY: RefCell<Option<ProxyThread>> = const { RefCell::new(None) };
}

/// A future and its task, in a proxy's pipeline.
type Job = (CoreRef, Task);

/// A process pool's proxies, as one of them sees the pool: its transport and settings.
pub(super) struct Proxy<'a> {
    pub(super) transport: &'a dyn Transport,
    pub(super) max_tasks_per_child: usize,
    pub(super) has_initializer: bool,
    /// The tasks with a deadline handed to workers (`deadline`).
    pub(super) registry: &'a Registry,
    /// The signal `cf_executor_terminate_workers`/`kill_workers` sent, or 0: once set,
    /// no worker is started and no task sent again.
    pub(super) stopped: &'a AtomicU32,
}

/// What a task that a stopped pool's worker held, or that found the pool stopped, says.
pub(super) fn stop_message(signal: u32) -> String {
    let (name, call) = if signal == libc::SIGKILL as u32 {
        ("SIGKILL", "cf_executor_kill_workers")
    } else {
        ("SIGTERM", "cf_executor_terminate_workers")
    };
    format!("cfutures: the executor's workers were stopped with {name} ({call})")
}

impl Proxy<'_> {
    /// On the proxy thread: takes charge of a new worker and waits for its initializer.
    /// `Err` only when the initializer failed (the pool is then broken); a worker lost
    /// while starting for any other reason is replaced when the first task comes.
    pub(super) fn adopt(&self, w: Link) -> Result<(), UserError> {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        PROXY.with(|p| *p.borrow_mut() = Some(ProxyThread { name, link: None }));
        match self.ready(w) {
            Ok(w) => {
                PROXY.with(|p| {
                    if let Some(proxy) = p.borrow_mut().as_mut() {
                        proxy.link = Some(w);
                    }
                });
                Ok(())
            }
            Err(StartError::InitFailed(e)) => Err(e),
            Err(StartError::Died(_)) => Ok(()),
        }
    }

    /// Waits for a new worker's first frame: ready, or its initializer's failure.
    fn ready(&self, mut w: Link) -> Result<Link, StartError> {
        let first = read_header(w.fd.as_fd(), &mut w.rb);
        let error = match first {
            Ok(Some((K_READY, 0))) => return Ok(w),
            Ok(Some((K_INIT_FAILED, len))) => {
                let failure = read_vec(w.fd.as_fd(), &mut w.rb, len)
                    .ok()
                    .and_then(|p| decode_outcome(&mut Reader(&p), 1).ok());
                let raised = match failure {
                    Some(Outcome::Failed(f)) => Raised {
                        code: f.code,
                        message: f.message,
                        payload: None,
                    },
                    _ => Raised {
                        code: 0,
                        message: None,
                        payload: None,
                    },
                };
                // The worker exits by itself after reporting; reap it.
                self.retire(w);
                return Err(StartError::InitFailed(UserError::Raised(raised)));
            }
            _ => {
                let how = self.bury(w).unwrap_or_else(|| "died".to_owned());
                format!("a worker process {how} before it was ready")
            }
        };
        if self.has_initializer && self.stop_signal().is_none() {
            // Most likely the initializer itself crashed: that breaks the pool, as an
            // initializer that fails by `cf_raise` does.
            let message = format!("{error} (while running its initializer)");
            return Err(StartError::InitFailed(UserError::Raised(Raised {
                code: 0,
                message: CString::new(message).ok().map(Into::into),
                payload: None,
            })));
        }
        Err(StartError::Died(error))
    }

    /// On the proxy thread: runs `first` and then whatever `more` hands out, keeping up to
    /// `PIPELINE` tasks in flight in this proxy's worker process, so that a burst of small
    /// tasks costs a few system calls per batch rather than per task: answers already
    /// read in bulk are taken before new work, and the small tasks that then refill the
    /// pipeline go out together in one `send` (`encode_small`, `flush_batch`). Returns once it has
    /// gone idle through `last` (which the pool uses to count this worker idle before the
    /// final outcome is published, and which may hand out one more task instead).
    ///
    /// A worker runs its tasks in order and answers in order, so when its channel breaks
    /// the oldest task in flight is the one it was running: that one fails with
    /// `CF_BROKEN`; the later ones never started and are sent again to a new worker.
    pub(super) fn drive(
        &self,
        pool: &Pool,
        first: CoreRef,
        more: &mut dyn FnMut() -> Option<CoreRef>,
        last: &mut dyn FnMut() -> Option<CoreRef>,
    ) {
        let mut w: Option<Link> =
            PROXY.with(|p| p.borrow_mut().as_mut().and_then(|x| x.link.take()));
        // Tasks in flight, each with its arena slot if its input went through the arena.
        let mut inflight: VecDeque<(Job, Option<Slot>)> = VecDeque::new();
        let mut unsent: VecDeque<Job> = VecDeque::new();
        let mut next = Some(first);
        // Frames of small tasks waiting to go out together, and each task with the offset
        // where its frame ends (see `flush_batch`).
        let mut batch: Vec<u8> = Vec::new();
        let mut batched: Vec<(Job, usize)> = Vec::new();
        loop {
            // Answers already read in bulk are taken first (step 4): a burst of small
            // tasks then refills the pipeline several at a time, and `batch` sends them
            // in one system call.
            if !inflight.is_empty() && w.as_ref().is_some_and(|w| w.rb.has_frame()) {
                if self.read_answer(&mut w, &mut inflight, &mut unsent, &mut next, last) {
                    break;
                }
                continue;
            }
            // 1. Take work while the pipeline has room.
            while inflight.len() + unsent.len() < PIPELINE {
                let Some(job) = next.take().or_else(&mut *more) else {
                    break;
                };
                if let Some(task) = job.start() {
                    // A deadline passed before the task went out: it never runs.
                    match task.unless_expired() {
                        Ok(task) => unsent.push_back((job, task)),
                        Err(outcome) => drop(job.finish(outcome)),
                    }
                }
            }
            // 2. Send it, as far as this worker may take it.
            let mut channel_broken = false;
            while let Some((job, task)) = unsent.pop_front() {
                // Taken for this worker earlier; its deadline may have passed since.
                let task = match task.unless_expired() {
                    Ok(task) => task,
                    Err(outcome) => {
                        drop(job.finish(outcome));
                        continue;
                    }
                };
                if w.is_none() {
                    match self.replace(pool) {
                        Ok(fresh) => w = Some(fresh),
                        Err(failure) => {
                            let _ = job.finish(Outcome::Failed(failure));
                            continue;
                        }
                    }
                }
                let worker = w.as_mut().expect("a worker was just ensured");
                if self.max_tasks_per_child != 0
                    && worker.tasks + batched.len() >= self.max_tasks_per_child
                {
                    unsent.push_front((job, task));
                    break;
                }
                let before = batch.len();
                let with_deadline = worker.watches() && deadline_of(&task).is_some();
                if !with_deadline && encode_small(&task, &mut batch) {
                    // The batch's frames count as in flight (`may_send`); an idle worker
                    // takes a first frame of any size.
                    let alone = batched.is_empty() && worker.frames.is_empty();
                    if !alone && worker.unread + batch.len() > worker.budget {
                        batch.truncate(before);
                        unsent.push_front((job, task));
                        break;
                    }
                    batched.push(((job, task), batch.len()));
                    continue;
                }
                // A task that goes on its own: the batch goes first, in order.
                if !flush_batch(worker, &mut batch, &mut batched, &mut inflight, &mut unsent) {
                    unsent.push_front((job, task));
                    channel_broken = true;
                    break;
                }
                if with_deadline {
                    // Registered before its frame goes out, as the next task of this
                    // worker (see `deadline`).
                    let seq = worker.tasks as u64 + 1;
                    match worker.watch() {
                        Ok(watch) => {
                            if self.registry.insert(&job, &watch, seq).is_err() {
                                let _ = job.finish(Outcome::failed(
                                    CF_NO_MEMORY,
                                    libc::ENOMEM,
                                    "cfutures: no memory to keep the task's deadline",
                                ));
                                continue;
                            }
                        }
                        Err(_) => {
                            unsent.push_front((job, task));
                            channel_broken = true;
                            break;
                        }
                    }
                }
                let sent = worker.send(&task, inflight.is_empty());
                if with_deadline && !matches!(sent, Ok(Sent::Yes(_))) {
                    self.registry.remove(&job);
                }
                match sent {
                    Ok(Sent::Yes(slot)) => {
                        worker.tasks += 1;
                        inflight.push_back(((job, task), slot));
                    }
                    Ok(Sent::NoRoom) => {
                        // Its arena or its socket is full: read answers (step 4), which
                        // free slots and room.
                        unsent.push_front((job, task));
                        break;
                    }
                    Err(_) => {
                        // The worker is gone. Read what it answered before it went, then
                        // bury it (step 4); this task never reached it.
                        unsent.push_front((job, task));
                        channel_broken = true;
                        break;
                    }
                }
            }
            if let Some(worker) = w.as_mut()
                && !flush_batch(worker, &mut batch, &mut batched, &mut inflight, &mut unsent)
            {
                channel_broken = true;
            }
            // 3. Nothing in flight.
            if inflight.is_empty() {
                if let Some(worker) = w.take() {
                    if channel_broken {
                        self.bury(worker);
                    } else if !unsent.is_empty() {
                        self.retire(worker); // at its task limit; a new one is started
                    } else {
                        w = Some(worker);
                    }
                }
                if !unsent.is_empty() {
                    continue;
                }
                match last() {
                    Some(job) => {
                        next = Some(job);
                        continue;
                    }
                    None => break,
                }
            }
            // 4. Read the oldest answer.
            if self.read_answer(&mut w, &mut inflight, &mut unsent, &mut next, last) {
                break;
            }
        }
        PROXY.with(|p| {
            if let Some(proxy) = p.borrow_mut().as_mut() {
                proxy.link = w;
            }
        });
    }

    /// Step 4 of `drive`: reads the oldest answer and finishes its future; a broken
    /// channel buries the worker, fails the task it was running and puts the tasks after
    /// it back in `unsent`. `true` when the proxy has gone idle (`last` handed out
    /// nothing more).
    fn read_answer(
        &self,
        w: &mut Option<Link>,
        inflight: &mut VecDeque<(Job, Option<Slot>)>,
        unsent: &mut VecDeque<Job>,
        next: &mut Option<CoreRef>,
        last: &mut dyn FnMut() -> Option<CoreRef>,
    ) -> bool {
        let worker = w.as_mut().expect("tasks in flight have a worker");
        let (slot, reuse) = match inflight.front_mut() {
            Some(((_, Task::Bytes(_, input)), slot)) => (*slot, Some(input)),
            Some((_, slot)) => (*slot, None),
            None => (None, None),
        };
        let in_arena = slot.and_then(|s| worker.arena.as_ref().map(|a| (&a.map, s)));
        match recv_outcome(worker.fd.as_fd(), &mut worker.rb, in_arena, reuse) {
            Ok(outcome) => {
                worker.answered();
                let ((job, task), slot) =
                    inflight.pop_front().expect("an answer to a task in flight");
                let outcome = match deadline_timeout(&task) {
                    Some(timeout) => {
                        self.registry.remove(&job);
                        match outcome {
                            // The worker found its deadline passed: it never ran.
                            Outcome::Failed(f) if f.status == CF_DEADLINE => {
                                deadline_outcome(timeout, Where::NotStarted)
                            }
                            o => o,
                        }
                    }
                    None => outcome,
                };
                // An owned task's result is freed with the future; its `arg_free` runs
                // as the task drops.
                let outcome = task.adopt(outcome);
                drop(task);
                if let (Some(slot), Some(arena)) = (slot, worker.arena.as_mut()) {
                    arena.free(slot);
                }
                let mut idle = false;
                if inflight.is_empty() && unsent.is_empty() && next.is_none() {
                    // Count this worker idle before the outcome is published, unless
                    // there is more to do (see pool.rs).
                    if self.max_tasks_per_child != 0 && worker.tasks >= self.max_tasks_per_child {
                        if let Some(done) = w.take() {
                            self.retire(done);
                        }
                    }
                    *next = last();
                    idle = next.is_none();
                }
                let _ = job.finish(outcome);
                idle
            }
            Err(e) => {
                // The task it was running, by its number among those sent to it: if the
                // deadline timer killed the worker for it, the timer finishes its future.
                let head = (worker.tasks - inflight.len()) as u64 + 1;
                let struck = worker.watch.as_ref().is_some_and(|w| w.killed(head));
                let dead = w.take().expect("checked above");
                let id = dead.id;
                let status = self.bury(dead);
                let how = if e.kind() == io::ErrorKind::OutOfMemory {
                    // Not the worker's fault: its answer did not fit in our memory.
                    "answered with a result this process could not allocate (the worker \
                     was stopped)"
                        .to_owned()
                } else {
                    status.unwrap_or_else(|| "died".to_owned())
                };
                let ((job, task), _) = inflight.pop_front().expect("an answer to a task in flight");
                if deadline_of(&task).is_some() {
                    self.registry.remove(&job);
                }
                drop(task);
                if !struck {
                    let message = match self.stop_signal() {
                        Some(sig) => format!(
                            "{}: the worker process {id} running the task {how}",
                            stop_message(sig)
                        ),
                        None => format!("the worker process {id} running the task {how}"),
                    };
                    let _ = job.finish(Outcome::Failed(Failure::new(CF_BROKEN, 0, &message)));
                }
                // The rest never started: send them again, in order (or, once the pool's
                // workers were stopped, fail them: `replace` starts no worker).
                while let Some(((job, task), _)) = inflight.pop_back() {
                    if deadline_of(&task).is_some() {
                        self.registry.remove(&job);
                    }
                    unsent.push_front((job, task));
                }
                false
            }
        }
    }

    /// Starts a replacement worker for this proxy and waits until it is ready. A worker
    /// lost while starting (killed from outside) is tried again a few times; a failed
    /// initializer breaks the pool.
    fn replace(&self, pool: &Pool) -> Result<Link, Box<Failure>> {
        let name = PROXY
            .with(|p| p.borrow().as_ref().map(|x| x.name.clone()))
            .unwrap_or_default();
        let mut attempts = 0;
        loop {
            if let Some(sig) = self.stop_signal() {
                return Err(Failure::new(
                    CF_BROKEN,
                    0,
                    &format!("{} before the task ran", stop_message(sig)),
                ));
            }
            let w = self
                .transport
                .start(&name)
                .map_err(|e| match self.stop_signal() {
                    // Stopped since the check above: the server refused the start for that.
                    Some(sig) => Failure::new(
                        CF_BROKEN,
                        0,
                        &format!("{} before the task ran", stop_message(sig)),
                    ),
                    None => Failure::new(
                        CF_BROKEN,
                        e.raw_os_error().unwrap_or(0),
                        &format!("could not start a worker process: {e}"),
                    ),
                })?;
            match self.ready(w) {
                Ok(w) => return Ok(w),
                Err(StartError::Died(how)) => {
                    attempts += 1;
                    if attempts >= START_ATTEMPTS {
                        return Err(Failure::new(CF_BROKEN, 0, &how));
                    }
                }
                Err(StartError::InitFailed(e)) => {
                    let failure = match &e {
                        UserError::Raised(r) => Failure::new(
                            CF_BROKEN,
                            r.code,
                            &format!(
                                "a worker initializer failed ({}); the executor is broken",
                                r.message
                                    .as_deref()
                                    .map(|m| m.to_string_lossy())
                                    .unwrap_or_default()
                            ),
                        ),
                        UserError::Unwound => {
                            Failure::new(CF_BROKEN, 0, "a worker initializer failed")
                        }
                    };
                    pool.break_pool(e);
                    return Err(failure);
                }
            }
        }
    }

    /// The signal the pool's workers were stopped with, if they were.
    fn stop_signal(&self) -> Option<u32> {
        Some(self.stopped.load(Ordering::Acquire)).filter(|&s| s != 0)
    }

    /// Kills and reaps a worker whose channel broke; how it ended, if known.
    pub(super) fn bury(&self, w: Link) -> Option<String> {
        let id = w.id;
        drop(w);
        self.transport.end(id, true)
    }

    /// Ends an idle worker: EOF on its channel makes it exit; then reap it.
    fn retire(&self, w: Link) {
        let id = w.id;
        drop(w);
        self.transport.end(id, false);
    }

    /// On the proxy thread, as it exits: retires its worker, if any.
    pub(super) fn retire_own(&self) {
        let proxy = PROXY.with(|p| p.borrow_mut().take());
        if let Some(w) = proxy.and_then(|p| p.link) {
            self.retire(w);
        }
    }
}

/// Sends the frames in `batch` in one go; each task in `batched` whose frame went out
/// whole joins `inflight` (the worker may have run it), the others go back to the front
/// of `unsent`, in order. `false` when the channel broke. Leaves both batch lists empty.
fn flush_batch(
    worker: &mut Link,
    batch: &mut Vec<u8>,
    batched: &mut Vec<(Job, usize)>,
    inflight: &mut VecDeque<(Job, Option<Slot>)>,
    unsent: &mut VecDeque<Job>,
) -> bool {
    if batched.is_empty() {
        return true;
    }
    let (sent, result) = send_counted(worker.fd.as_fd(), batch);
    let cut = batched.partition_point(|&(_, end)| end <= sent);
    let mut start = 0;
    for (job, end) in batched.drain(..cut) {
        worker.tasks += 1;
        worker.sent(end - start);
        start = end;
        inflight.push_back((job, None));
    }
    for (job, _) in batched.drain(..).rev() {
        unsent.push_front(job);
    }
    batch.clear();
    result.is_ok()
}
