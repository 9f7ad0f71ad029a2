//! The I/O thread of one virtio device.
//!
//! It lives as long as the device and waits in epoll on the queues'
//! notification eventfds (written by KVM when the guest kicks), on the
//! INTx resample eventfd (written by KVM when the guest acknowledges the
//! interrupt), and on a control eventfd through which the transport hands
//! it the queues at DRIVER_OK and takes them back on reset. Activation's
//! host work ([`QueueHandler::start`]) runs here too: the transport runs
//! on vCPU threads, whose seccomp filter is narrower than this thread's.
//!
//! Control requests are synchronous: when [`Worker::reset`] returns, the
//! thread has dropped the queues and finished the request it was serving,
//! so nothing touches guest memory for a reset device. While the VM is
//! paused the thread serves no queue but still answers control requests. Control requests are served only between
//! passes over the queues, so a request is either done (on the used ring,
//! its index advanced) or not taken (still available): once
//! [`Worker::quiesce`] answers for a paused VM, the rings and the
//! returned indices agree and stay so until the VM runs again.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::device::{DeviceBroken, EventSource, Flusher, Interrupt, QueueHandler};
use crate::lifecycle::{DeviceWork, Lifecycle};
use crate::memory::GuestMemoryMmap;

/// Chains served per queue before the thread looks at its other events.
const BUDGET: usize = 256;
/// How often a thread held by a pause looks whether it may go on.
const HOLD_POLL_MS: i32 = 20;

const TOKEN_CONTROL: u64 = 0;
const TOKEN_RESAMPLE: u64 = 1;
const TOKEN_FIRST_QUEUE: u64 = 2;
/// Device event sources get tokens from here on, clear of the queues'.
const TOKEN_FIRST_SOURCE: u64 = 1 << 32;

/// What the device needs to serve its queues.
pub struct Activation {
    /// One entry per queue; `None` for queues the driver did not enable.
    pub queues: Vec<Option<Queue>>,
    pub handler: Box<dyn QueueHandler>,
    pub mem: GuestMemoryMmap,
}

enum Command {
    Activate(Activation),
    Reset,
    Quiesce,
    Stop,
}

/// Per queue where the device stands (`None` for a queue the driver left
/// disabled); `None` as a whole when the device serves no queues.
pub type Positions = Option<Vec<Option<QueuePosition>>>;

/// Where the device is in one queue: the next available entry it will
/// take and the next used entry it will write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePosition {
    pub next_avail: u16,
    pub next_used: u16,
}

#[derive(Default)]
struct ControlState {
    command: Option<Command>,
    /// The answer to [`Command::Quiesce`].
    quiesced: Option<Result<Positions, String>>,
    /// Commands completed, so a caller knows its own was.
    completed: u64,
    issued: u64,
}

struct Control {
    state: Mutex<ControlState>,
    done: Condvar,
    wake: EventFd,
}

/// What the I/O thread watches besides its queues.
pub struct WorkerEvents {
    /// One per queue, in queue order.
    pub notifiers: Vec<EventFd>,
    /// INTx resample and what to do on it.
    pub resample: Option<(EventFd, Box<dyn Fn() + Send>)>,
    pub interrupt: Arc<dyn Interrupt>,
    /// The device's own event sources.
    pub sources: Vec<EventSource>,
    /// Run before the device's state is taken ([`Worker::quiesce`]).
    pub flusher: Option<Flusher>,
    /// Called when the driver broke the device (sets NEEDS_RESET).
    pub on_broken: Box<dyn Fn(&DeviceBroken) + Send>,
    pub lifecycle: Arc<Lifecycle>,
}

/// Handle on a device's I/O thread; dropping it stops the thread.
pub struct Worker {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn spawn(name: &str, events: WorkerEvents) -> std::io::Result<Worker> {
        let control = Arc::new(Control {
            state: Mutex::new(ControlState::default()),
            done: Condvar::new(),
            wake: EventFd::new(libc::EFD_NONBLOCK)?,
        });
        let epoll = Epoll::new()?;
        let watch = |fd: i32, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        watch(control.wake.as_raw_fd(), TOKEN_CONTROL)?;
        if let Some((fd, _)) = &events.resample {
            watch(fd.as_raw_fd(), TOKEN_RESAMPLE)?;
        }
        for (i, fd) in events.notifiers.iter().enumerate() {
            watch(fd.as_raw_fd(), TOKEN_FIRST_QUEUE + i as u64)?;
        }
        for (i, source) in events.sources.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                source.fd,
                EpollEvent::new(source.events, TOKEN_FIRST_SOURCE + i as u64),
            )?;
        }
        let thread_control = control.clone();
        let thread = crate::sandbox::spawn(
            crate::sandbox::ThreadKind::Device,
            name.to_string(),
            move || run(epoll, events, &thread_control),
        )?;
        Ok(Worker {
            control,
            thread: Some(thread),
        })
    }

    fn command(&self, command: Command) {
        let mut state = self.control.state.lock().unwrap_or_else(|e| e.into_inner());
        state.command = Some(command);
        state.issued += 1;
        let mine = state.issued;
        let _ = self.control.wake.write(1);
        while state.completed < mine {
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return;
            }
            state = self
                .control
                .done
                .wait_timeout(state, std::time::Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Hands the queues to the thread (DRIVER_OK).
    pub fn activate(&self, activation: Activation) {
        self.command(Command::Activate(activation));
    }

    /// Takes the queues back; returns once the thread let go of them.
    pub fn reset(&self) {
        self.command(Command::Reset);
    }

    /// Brings the device to rest for a send: the thread finishes its pass,
    /// runs the device's [`Flusher`] and says where it stands in each
    /// queue. With the VM paused it then stays put, so the answer holds
    /// until the VM runs again.
    pub fn quiesce(&self) -> Result<Positions, String> {
        self.command(Command::Quiesce);
        self.control
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .quiesced
            .take()
            .unwrap_or_else(|| Err("the device's I/O thread is gone".into()))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.command(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Active {
    queues: Vec<Option<Queue>>,
    handler: Box<dyn QueueHandler>,
    mem: GuestMemoryMmap,
    /// Queues whose budget ran out and that are due another pass.
    due: Vec<bool>,
}

fn run(epoll: Epoll, events: WorkerEvents, control: &Control) {
    let mut active: Option<Active> = None;
    let mut ready = vec![EpollEvent::default(); 8 + events.notifiers.len() + events.sources.len()];
    loop {
        let due = active.as_ref().is_some_and(|a| a.due.iter().any(|&d| d));
        let timeout = match events.lifecycle.device_may_work() {
            DeviceWork::Stop => return,
            // Paused: look again soon, serving control requests meanwhile.
            DeviceWork::Hold => HOLD_POLL_MS,
            DeviceWork::Go if due => 0,
            DeviceWork::Go => -1,
        };
        let n = match epoll.wait(timeout, &mut ready) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("virtio worker: epoll: {e}");
                return;
            }
        };
        for event in &ready[..n] {
            match event.data() {
                TOKEN_CONTROL => {
                    let _ = control.wake.read();
                    let mut state = control.state.lock().unwrap_or_else(|e| e.into_inner());
                    let command = state.command.take();
                    let stop = matches!(command, Some(Command::Stop));
                    match command {
                        Some(Command::Activate(mut a)) => {
                            // Before the command completes: the driver
                            // sees DRIVER_OK with the host side set up.
                            a.handler.start();
                            let due = vec![true; a.queues.len()];
                            active = Some(Active {
                                queues: a.queues,
                                handler: a.handler,
                                mem: a.mem,
                                due,
                            });
                        }
                        Some(Command::Reset) | Some(Command::Stop) => active = None,
                        Some(Command::Quiesce) => {
                            let positions = active.as_ref().map(|a| {
                                a.queues
                                    .iter()
                                    .enumerate()
                                    .map(|(index, q)| {
                                        q.as_ref().map(|q| QueuePosition {
                                            next_avail: q
                                                .next_avail()
                                                .wrapping_sub(a.handler.held_chains(index)),
                                            next_used: q.next_used(),
                                        })
                                    })
                                    .collect()
                            });
                            let flushed = match &events.flusher {
                                Some(flush) => flush().map_err(|e| format!("flush: {e}")),
                                None => Ok(()),
                            };
                            state.quiesced = Some(flushed.map(|()| positions));
                        }
                        None => {}
                    }
                    state.completed = state.issued;
                    control.done.notify_all();
                    if stop {
                        return;
                    }
                }
                TOKEN_RESAMPLE => {
                    if let Some((fd, on_resample)) = &events.resample {
                        let _ = fd.read();
                        on_resample();
                    }
                }
                token if token >= TOKEN_FIRST_SOURCE => {
                    let source = events.sources.get((token - TOKEN_FIRST_SOURCE) as usize);
                    if let (Some(source), Some(a)) = (source, active.as_mut()) {
                        for &index in &source.queues {
                            if let Some(due) = a.due.get_mut(index) {
                                *due = true;
                            }
                        }
                    }
                }
                token => {
                    let index = (token - TOKEN_FIRST_QUEUE) as usize;
                    if let Some(fd) = events.notifiers.get(index) {
                        let _ = fd.read();
                    }
                    if let Some(a) = active.as_mut()
                        && let Some(due) = a.due.get_mut(index)
                    {
                        *due = true;
                    }
                }
            }
        }
        let Some(a) = active.as_mut() else { continue };
        match events.lifecycle.device_may_work() {
            DeviceWork::Go => {}
            DeviceWork::Hold => continue,
            DeviceWork::Stop => return,
        }
        let mut broken = None;
        for index in 0..a.queues.len() {
            if !std::mem::take(&mut a.due[index]) {
                continue;
            }
            let Some(queue) = a.queues[index].as_mut() else {
                continue;
            };
            match a
                .handler
                .process_queue(index, queue, &a.mem, events.interrupt.as_ref(), BUDGET)
            {
                Ok(more) => a.due[index] = more,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        // Work one queue made for another (a reply to inject).
        let woken = a.handler.take_woken();
        for (index, due) in a.due.iter_mut().enumerate() {
            if index < 64 && woken & (1 << index) != 0 {
                *due = true;
            }
        }
        if let Some(e) = broken {
            // Nothing more is served until the driver resets the device.
            active = None;
            (events.on_broken)(&e);
        }
    }
}
