//! A [`Link`] with its items: what a firmware keeps.

use heapless::Deque;
use silt_frame::{decode, Body, Deframer, NackReason, Readings, Time};

use crate::{Config, Event, Identity, Link, Received, Receiver, Transmit};

/// What a queued item sends as a data frame.
pub trait Payload {
    /// The event time and readings of this item, sent as data frame `seq`. Called again for
    /// every retransmission: it must give the same readings each time.
    fn data(&self, seq: u32) -> (Time, Readings<'_>);
}

/// What the caller does with the connection next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep going.
    Continue,
    /// Close the connection and open a new one, after the usual backoff.
    Reconnect(&'static str),
    /// The bridge refused the device itself (see [`Event::Refused`]): close, tell the
    /// operator, and wait long before trying again.
    Refused { reason: NackReason, verified: bool },
}

/// A device's session with the bridge and the items it has not had acked: up to `N`, oldest
/// first. When a new item comes to a full backlog the oldest is dropped (see
/// [`Backlog::dropped`]); an item otherwise leaves only when a cumulative ack covers it.
pub struct Backlog<'a, T, const N: usize> {
    identity: Identity<'a>,
    link: Link,
    items: Deque<T, N>,
    dropped: u64,
}

impl<'a, T: Payload, const N: usize> Backlog<'a, T, N> {
    pub const fn new(identity: Identity<'a>, config: Config) -> Backlog<'a, T, N> {
        Backlog { identity, link: Link::new(config), items: Deque::new(), dropped: 0 }
    }

    /// Sets the module version the next hello reports (0: none), after the device started,
    /// changed or stopped its processor.
    pub fn set_module(&mut self, version: u32) {
        self.identity.module = version;
    }

    /// The session's state and counters.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Queues an item. Returns false if the backlog was full and its oldest item was dropped
    /// to make room.
    pub fn push(&mut self, item: T) -> bool {
        let mut kept_all = true;
        if self.items.is_full() {
            self.items.pop_front();
            self.link.handle_dropped_oldest();
            self.dropped += 1;
            kept_all = false;
        }
        let pushed = self.items.push_back(item).is_ok();
        assert!(pushed, "the backlog has room after dropping its oldest item");
        self.link.handle_queued(1);
        kept_all
    }

    /// Items dropped because the backlog was full, since it was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Items waiting for an ack.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True once this connection's hello is acked and data frames flow.
    pub fn is_streaming(&self) -> bool {
        self.link.is_streaming()
    }

    /// See [`Link::handle_connected`].
    pub fn handle_connected(&mut self) {
        self.link.handle_connected();
    }

    /// See [`Link::handle_disconnected`].
    pub fn handle_disconnected(&mut self) {
        self.link.handle_disconnected();
    }

    /// Handles one unstuffed frame from the bridge.
    pub fn handle_frame(&mut self, bytes: &[u8], now_ms: u64) -> Verdict {
        self.link.handle_frame(bytes, &self.identity.key, now_ms);
        self.verdict()
    }

    /// Handles the frames that end in `input`, a chunk of the byte stream from the bridge.
    pub fn handle_stream(&mut self, deframer: &mut Deframer, input: &[u8], now_ms: u64) -> Verdict {
        let key = self.identity.key;
        deframer.push_all(input, |frame| match frame {
            Ok(bytes) => {
                self.link.handle_frame(bytes, &key, now_ms);
            }
            Err(_) => self.link.handle_undecodable(),
        });
        self.verdict()
    }

    /// Like [`Backlog::handle_stream`], for a device that takes modules: verified module
    /// chunks go to `receiver`, which writes them into `slot`, and a hello's ack makes its
    /// module state due.
    pub fn handle_stream_delivering(
        &mut self,
        deframer: &mut Deframer,
        input: &[u8],
        now_ms: u64,
        receiver: &mut Receiver,
        slot: &mut [u8],
    ) -> Verdict {
        let key = self.identity.key;
        deframer.push_all(input, |frame| match frame {
            Ok(bytes) => {
                let greeting = !self.link.is_streaming();
                let received = self.link.handle_frame(bytes, &key, now_ms);
                if greeting && self.link.is_streaming() {
                    receiver.handle_hello_acked(now_ms);
                }
                if received == Received::Module {
                    if let Ok(frame) = decode(bytes) {
                        if let Body::ModuleChunk(chunk) = &frame.frame().body {
                            receiver.handle_chunk(chunk, slot);
                        }
                    }
                }
            }
            Err(_) => self.link.handle_undecodable(),
        });
        self.verdict()
    }

    /// Writes a module state frame with `receiver`'s state; returns the bytes written. `out`
    /// needs [`crate::TRANSMIT_BYTES_MAX`].
    pub fn encode_module_state(&self, receiver: &Receiver, out: &mut [u8]) -> usize {
        self.identity.encode_module_state(receiver.state(self.identity.device), out)
    }

    /// See [`Link::handle_timeout`].
    pub fn handle_timeout(&mut self, now_ms: u64) -> Verdict {
        self.link.handle_timeout(now_ms);
        self.verdict()
    }

    /// See [`Link::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<u64> {
        self.link.poll_timeout()
    }

    /// The next bytes to write, if any are due: written into `out` (at least
    /// [`crate::TRANSMIT_BYTES_MAX`] bytes), length returned. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now_ms: u64, out: &mut [u8]) -> Option<usize> {
        let n = match self.link.poll_transmit(now_ms)? {
            Transmit::Hello { next, resync } => self.identity.encode_hello(next, resync, now_ms, out),
            Transmit::Data { seq, index, .. } => {
                let item = self.items.get(index).expect("the link sends queued items only");
                let (time, readings) = item.data(seq);
                self.identity.encode_data(seq, time, readings, out)
            }
            Transmit::Heartbeat => self.identity.encode_heartbeat(out),
        };
        Some(n)
    }

    /// Drops what the link says is acked, and says whether the connection goes on.
    fn verdict(&mut self) -> Verdict {
        let mut verdict = Verdict::Continue;
        while let Some(event) = self.link.poll_event() {
            match event {
                Event::Acked { count } => {
                    for _ in 0..count {
                        self.items.pop_front().expect("acked items are queued");
                    }
                }
                Event::Reconnect(why) => verdict = Verdict::Reconnect(why),
                Event::Refused { reason, verified } => verdict = Verdict::Refused { reason, verified },
            }
        }
        verdict
    }
}
