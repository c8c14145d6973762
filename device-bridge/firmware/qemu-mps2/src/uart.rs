//! CMSDK APB UART0 of the MPS2 (ARM DDI0479C, "APB UART"; QEMU hw/char/cmsdk-apb-uart.c),
//! driven through its registers. Transmit polls; receive runs from the RX interrupt, which moves
//! each byte into a ring that the main loop drains, so the core can sleep (WFI) between bytes
//! instead of spinning a host CPU.
//!
//! The receive buffer in hardware is one byte. QEMU offers the next byte only once the guest
//! has read the previous one, so none are lost to overrun; the ring only has to hold what
//! arrives while the main loop is busy.

use core::cell::RefCell;
use core::ptr::{read_volatile, write_volatile};

use cortex_m::interrupt::{self, InterruptNumber, Mutex};
use cortex_m::peripheral::NVIC;

const BASE: usize = 0x4000_4000;
const DATA: usize = BASE;
const STATE: usize = BASE + 0x04;
const CTRL: usize = BASE + 0x08;
const INTSTATUS: usize = BASE + 0x0c;
const BAUDDIV: usize = BASE + 0x10;

const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
const CTRL_RX_INTEN: u32 = 1 << 3;
const INTSTATUS_RX: u32 = 1 << 1;

/// The MPS2's peripheral clock (QEMU hw/arm/mps2.c: SYSCLK_FRQ).
pub const PCLK_HZ: u32 = 25_000_000;
/// 115200 baud. QEMU does not pace the line by it, but the divider must be at least 16 or it
/// treats the UART as unprogrammed.
const BAUD: u32 = 115_200;
/// External interrupt number of UART0's receive interrupt on the AN385/AN386.
pub const RX_IRQ: u16 = 0;
/// Received bytes held for the main loop: several stuffed frames' worth.
const RX_RING_BYTES: usize = 2048;

#[derive(Clone, Copy)]
struct Irq(u16);

// SAFETY: the number is a valid external interrupt of this machine (32 on the AN386).
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

struct Ring {
    bytes: [u8; RX_RING_BYTES],
    head: usize,
    len: usize,
    /// Bytes that arrived with the ring full; the deframer resynchronises after them.
    dropped: u32,
}

static RX: Mutex<RefCell<Ring>> =
    Mutex::new(RefCell::new(Ring { bytes: [0; RX_RING_BYTES], head: 0, len: 0, dropped: 0 }));

fn read(reg: usize) -> u32 {
    // SAFETY: `reg` is one of UART0's registers above: aligned, mapped, no side effects beyond
    // the device's own (reading DATA takes the received byte, which is what callers want).
    unsafe { read_volatile(reg as *const u32) }
}

fn write(reg: usize, value: u32) {
    // SAFETY: as in `read`; the values written are the ones the TRM defines.
    unsafe { write_volatile(reg as *mut u32, value) }
}

/// UART0, configured. Only one exists: [`Uart::take`] hands it out once.
pub struct Uart(());

impl Uart {
    /// Programs the divider, enables transmit, receive and the receive interrupt.
    pub fn take() -> Uart {
        static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        assert!(!TAKEN.swap(true, core::sync::atomic::Ordering::Relaxed), "UART0 taken twice");
        write(BAUDDIV, PCLK_HZ / BAUD);
        write(CTRL, CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INTEN);
        // SAFETY: the handler (`on_rx_interrupt`, called from DefaultHandler) only touches the
        // ring inside a critical section, so unmasking cannot break a critical section of ours.
        unsafe { NVIC::unmask(Irq(RX_IRQ)) };
        Uart(())
    }

    /// Writes every byte, waiting while the transmit buffer is full.
    pub fn write_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            while read(STATE) & STATE_TX_FULL != 0 {}
            write(DATA, u32::from(b));
        }
    }

    /// Moves received bytes into `out` and returns how many.
    pub fn read_available(&mut self, out: &mut [u8]) -> usize {
        interrupt::free(|cs| {
            let mut ring = RX.borrow(cs).borrow_mut();
            let n = ring.len.min(out.len());
            for (i, slot) in out[..n].iter_mut().enumerate() {
                *slot = ring.bytes[(ring.head + i) % RX_RING_BYTES];
            }
            ring.head = (ring.head + n) % RX_RING_BYTES;
            ring.len -= n;
            n
        })
    }

    /// Bytes dropped because the ring was full, since boot.
    pub fn dropped(&self) -> u32 {
        interrupt::free(|cs| RX.borrow(cs).borrow().dropped)
    }

    /// Sleeps until an interrupt (a received byte, the next tick) unless bytes are waiting.
    /// Checking and sleeping under masked interrupts closes the race where a byte arrives
    /// between the check and the WFI; WFI still wakes on the pending interrupt.
    pub fn wait(&mut self) {
        interrupt::free(|cs| {
            if RX.borrow(cs).borrow().len == 0 {
                cortex_m::asm::wfi();
            }
        });
    }
}

/// The receive interrupt: drain the one-byte buffer into the ring.
pub fn on_rx_interrupt() {
    // The interrupt status bit stays set until written back; clear it before reading so that a
    // byte arriving meanwhile raises it again.
    write(INTSTATUS, INTSTATUS_RX);
    interrupt::free(|cs| {
        let mut ring = RX.borrow(cs).borrow_mut();
        while read(STATE) & STATE_RX_FULL != 0 {
            let b = read(DATA) as u8;
            if ring.len == RX_RING_BYTES {
                ring.dropped += 1;
                continue;
            }
            let tail = (ring.head + ring.len) % RX_RING_BYTES;
            ring.bytes[tail] = b;
            ring.len += 1;
        }
    });
}
