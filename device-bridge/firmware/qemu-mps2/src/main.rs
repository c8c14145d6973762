//! Silt device firmware for QEMU's `mps2-an386` machine (Cortex-M4): a simulated sensor that
//! sends samples to the Silt bridge over UART0 with the device frame protocol
//! (docs/device-frames.md), until every one is acked, then exits QEMU.
//!
//! It is the protocol's reference device and the bridge's end-to-end test peer, not a product:
//! the readings are made up (`sensor`), the device id, key and sample count come from the
//! semihosting command line (`provision`), and progress goes to the host through semihosting
//! (QEMU's stdout and stderr), never to the UART, which carries frames only.
//!
//! Code map: `session` is the protocol state machine (sans-IO), `uart` the CMSDK UART driver,
//! and this file the glue: clock, interrupts, main loop, exit.
#![no_std]
#![no_main]

mod provision;
mod sensor;
mod session;
mod uart;

use core::cell::Cell;

use cortex_m::interrupt::{self, Mutex};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::debug::{self, EXIT_FAILURE, EXIT_SUCCESS};
use cortex_m_semihosting::{heprintln, hprintln};
use silt_frame::Deframer;

use session::{Outcome, Session, TRANSMIT_BYTES_MAX};

/// Name and version sent in the hello, for the bridge's logs.
const FIRMWARE: &str = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));
/// A progress line every this many acked samples.
const PROGRESS_EVERY_SAMPLES: u32 = 50;
/// Bytes taken from the receive ring per loop pass.
const RX_CHUNK_BYTES: usize = 128;

/// Milliseconds since boot, counted by SysTick.
static MILLIS: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

fn now_ms() -> u64 {
    interrupt::free(|cs| MILLIS.borrow(cs).get())
}

#[exception]
fn SysTick() {
    interrupt::free(|cs| {
        let millis = MILLIS.borrow(cs);
        millis.set(millis.get() + 1);
    });
}

/// Every external interrupt lands here (there is no device crate to name them); only UART0's
/// receive interrupt is unmasked.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == uart::RX_IRQ as i16 {
        uart::on_rx_interrupt();
    } else {
        panic!("unexpected interrupt or exception {irqn}");
    }
}

#[entry]
fn main() -> ! {
    let mut cmdline = [0u8; provision::CMDLINE_BYTES_MAX];
    let config = match provision::read(&mut cmdline) {
        Ok(config) => config,
        Err(e) => {
            heprintln!("silt-fw: {}", e);
            exit(false)
        }
    };

    let mut core = cortex_m::Peripherals::take().expect("core peripherals are taken once");
    // The core clock is the MPS2's 25 MHz system clock in QEMU; 25 000 cycles is 1 ms.
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(uart::PCLK_HZ / 1_000 - 1);
    core.SYST.clear_current();
    core.SYST.enable_counter();
    core.SYST.enable_interrupt();
    let mut uart = uart::Uart::take();

    hprintln!("silt-fw: {} ({}) sending {} samples", config.device, FIRMWARE, config.count);
    let mut session = Session::new(config.device, &config.key, FIRMWARE, config.count);
    let mut deframer = Deframer::new();
    let mut rx = [0u8; RX_CHUNK_BYTES];
    let mut tx = [0u8; TRANSMIT_BYTES_MAX];
    let mut reported = None;
    loop {
        let now = now_ms();
        let received = uart.read_available(&mut rx);
        let mut input = &rx[..received];
        while !input.is_empty() {
            let (used, frame) = deframer.push(input);
            input = &input[used..];
            match frame {
                Some(Ok(bytes)) => session.handle(bytes, now),
                Some(Err(_)) => session.stats.frames_dropped += 1,
                None => {}
            }
        }
        report_progress(&session, &mut reported);
        match session.outcome() {
            Outcome::Running => {}
            Outcome::Done => {
                let s = session.stats;
                hprintln!(
                    "silt-fw: done {} frames, {} retransmits, {} sent, {} hellos, {} nacks, {} dropped, {} ms",
                    config.count,
                    s.retransmits,
                    s.data_sent,
                    s.hellos_sent,
                    s.nacks,
                    s.frames_dropped + uart.dropped(),
                    now_ms()
                );
                exit(true)
            }
            Outcome::Refused { reason, verified } => {
                let how = if verified { "" } else { " (unverified hints)" };
                heprintln!("silt-fw: refused by the bridge: {}{}", reason.as_str(), how);
                exit(false)
            }
        }
        while let Some(n) = session.poll_transmit(now_ms(), &mut tx) {
            uart.write_all(&tx[..n]);
        }
        if received == 0 {
            uart.wait();
        }
    }
}

/// Prints the first hello's ack, and every [`PROGRESS_EVERY_SAMPLES`] acked samples one line
/// with the readings of the last of them.
fn report_progress(session: &Session<'_>, reported: &mut Option<u32>) {
    let Some((acked, range)) = session.progress() else {
        return;
    };
    let base = range.start() - 1;
    let Some(last) = *reported else {
        hprintln!("silt-fw: hello acked at {}, sending seq {}..={}", acked, range.start(), range.end());
        *reported = Some(acked);
        return;
    };
    let done = acked.saturating_sub(base) / PROGRESS_EVERY_SAMPLES;
    if acked > last && done > last.saturating_sub(base) / PROGRESS_EVERY_SAMPLES {
        let s = sensor::sample(acked);
        hprintln!(
            "silt-fw: acked {}/{} (seq {}: {:.2} C, {:.1} %, {:.3} V), {} retransmits",
            acked - base,
            range.end() - base,
            acked,
            s.temperature_c,
            s.humidity_pct,
            s.supply_v,
            session.stats.retransmits
        );
        *reported = Some(acked);
    }
}

/// Ends the QEMU run through semihosting: exit status 0 for success, 1 otherwise.
fn exit(success: bool) -> ! {
    debug::exit(if success { EXIT_SUCCESS } else { EXIT_FAILURE });
    // Only reached without a semihosting host (a real board): stop here.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    heprintln!("silt-fw: panic: {}", info);
    exit(false)
}
