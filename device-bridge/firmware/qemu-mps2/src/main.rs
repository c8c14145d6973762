//! Silt device firmware for QEMU's `mps2-an386` machine (Cortex-M4): a simulated sensor that
//! sends samples to the Silt bridge over UART0 with the device frame protocol
//! (docs/device-frames.md), until every one is acked, then exits QEMU.
//!
//! It is the protocol's reference device and the bridge's end-to-end test peer, not a product:
//! the readings are made up (`sensor`), the device id, key and sample count come from the
//! semihosting command line (`provision`), and progress goes to the host through semihosting
//! (QEMU's stdout and stderr), never to the UART, which carries frames only.
//!
//! With the `wasm` feature (on by default) it can run a processor module on its readings
//! before sending them: the device tier of `docs/processor-abi.md`. The module comes from the
//! command line or over the frame link (`silt device deploy`, "Module delivery" in
//! `docs/device-frames.md`): a package is written to a slot of RAM apart from the running
//! module, checked whole, started, and only then run.
//!
//! Code map: the protocol is `silt-link`'s (sans-IO, shared with the ESP32-C3 firmware and the
//! simulator), `sensor` makes up the readings, `processor` (`silt_device_runtime::readings`,
//! shared with the ESP32-C3 firmware) runs a module on them, `uart` is the
//! CMSDK UART driver, and this file the glue: heap, clock, interrupts, main loop, exit.
#![no_std]
#![no_main]

#[cfg(feature = "wasm")]
extern crate alloc;

#[cfg(feature = "wasm")]
mod flash;
mod provision;
mod sensor;
mod uart;

use core::cell::Cell;

use cortex_m::interrupt::{self, Mutex};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::debug::{self, EXIT_FAILURE, EXIT_SUCCESS};
use cortex_m_semihosting::{heprintln, hprintln};
use silt_frame::Deframer;
#[cfg(feature = "wasm")]
use silt_link::Receiver;
use silt_link::{Backlog, Config, Identity, Verdict, TRANSMIT_BYTES_MAX};

use sensor::Queued;
#[cfg(feature = "wasm")]
use silt_device_runtime::readings as processor;

/// Name and version sent in the hello, for the bridge's logs.
const FIRMWARE: &str = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));
/// A progress line every this many acked samples.
const PROGRESS_EVERY_SAMPLES: u32 = 50;
/// Bytes taken from the receive ring per loop pass.
const RX_CHUNK_BYTES: usize = 128;
/// Data frames sent and not yet acked, at most; also the samples queued at once. Four keeps the
/// line busy while an ack travels back without making a go-back resend many frames.
const WINDOW_FRAMES: usize = 4;

/// The link's settings on this machine's UART.
const LINK: Config = Config {
    window: WINDOW_FRAMES as u32,
    // QEMU's clock follows the host's, but a loaded 2-core CI host can stall the bridge for a
    // while, so a full second, far above the few ms an ack takes here.
    ack_timeout_ms: 1_000,
    // A serial line cannot be reopened: giving up on the "connection" means saying hello again
    // (after a resync byte), which is what ten seconds without progress call for anyway.
    ack_timeouts_max: 10,
    hello_timeout_ms: 1_000,
    hello_timeouts_max: 10,
    // The bridge cannot store right now: a short pause, the bridge is on the same host.
    unavailable_hold_ms: 200,
    // Refusals under the all-zero key (which the spec makes hints only) in a row, with no frame
    // verified under our key between them, before the device believes them and stops. Three
    // hellos' worth, so that one stray frame cannot stop a device, yet a device the bridge does
    // not know stops within seconds instead of retrying forever.
    hints_max: 3,
    heartbeat_ms: 30_000,
};

/// Bytes of RAM the heap takes: the processor's module, its compiled code and its linear
/// memory (at most 256 KiB, `silt_device_runtime::Limits`). Half the board's 4 MiB.
#[cfg(feature = "wasm")]
const HEAP_BYTES: usize = 2 * 1024 * 1024;

#[cfg(feature = "wasm")]
#[global_allocator]
static HEAP: embedded_alloc::TlsfHeap = embedded_alloc::TlsfHeap::empty();

/// Milliseconds since boot, counted by SysTick.
static MILLIS: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

fn now_ms() -> u64 {
    interrupt::free(|cs| MILLIS.borrow(cs).get())
}

/// Core clock cycles since boot: the milliseconds SysTick counted and how far its current
/// period has run (it counts down from `CYCLES_PER_MS - 1`).
#[cfg(feature = "wasm")]
fn now_cycles() -> u64 {
    const CYCLES_PER_MS: u64 = uart::PCLK_HZ as u64 / 1_000;
    loop {
        let before = now_ms();
        let left = u64::from(cortex_m::peripheral::SYST::get_current());
        // A SysTick interrupt between the two reads would pair a new period with an old count.
        if now_ms() == before {
            return before * CYCLES_PER_MS + (CYCLES_PER_MS - 1 - left.min(CYCLES_PER_MS - 1));
        }
    }
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

    #[cfg(feature = "wasm")]
    {
        use core::mem::MaybeUninit;
        static mut HEAP_MEMORY: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];
        // SAFETY: runs once, before anything allocates; the region is used by nothing else.
        unsafe { HEAP.init(core::ptr::addr_of_mut!(HEAP_MEMORY) as usize, HEAP_BYTES) }
    }
    #[cfg(feature = "wasm")]
    let processor = core::cell::RefCell::new(processor::Processor::new(
        now_cycles,
        config.device,
        silt_device_runtime::Limits::default(),
    ));
    #[cfg(feature = "wasm")]
    if let Err(e) = start_processor(&config, &mut processor.borrow_mut()) {
        heprintln!("silt-fw: {}", e);
        exit(false)
    }
    // The emulated flash: journaled module state, and the module a delivery installed.
    #[cfg(feature = "wasm")]
    let flash = match (config.flash, config.only) {
        (Some(_), Some(_)) => {
            heprintln!("silt-fw: flash= is not kept with only=: its samples are numbered apart from frames");
            false
        }
        (Some(prefix), None) => {
            flash::init(prefix);
            processor.borrow_mut().set_journal(flash::journal);
            if config.module.is_none() {
                start_saved_module(&mut processor.borrow_mut(), &config.trusted[..config.trusted_count]);
            }
            true
        }
        (None, _) => false,
    };
    #[cfg(feature = "wasm")]
    let running_module = processor.borrow().version();
    #[cfg(feature = "wasm")]
    let mut receiver = Receiver::new(running_module);
    #[cfg(feature = "wasm")]
    let slot: &'static mut [u8] = {
        use silt_frame::MODULE_PACKAGE_BYTES_MAX;
        static mut SLOT: [u8; MODULE_PACKAGE_BYTES_MAX as usize] = [0; MODULE_PACKAGE_BYTES_MAX as usize];
        // SAFETY: taken once, here; nothing else names SLOT.
        unsafe { &mut *core::ptr::addr_of_mut!(SLOT) }
    };
    #[cfg(not(feature = "wasm"))]
    let running_module = 0;
    #[cfg(not(feature = "wasm"))]
    if config.module.is_some() {
        heprintln!("silt-fw: module= needs a firmware built with the wasm feature");
        exit(false)
    }

    let mut core = cortex_m::Peripherals::take().expect("core peripherals are taken once");
    // The core clock is the MPS2's 25 MHz system clock in QEMU; 25 000 cycles is 1 ms.
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(uart::PCLK_HZ / 1_000 - 1);
    core.SYST.clear_current();
    core.SYST.enable_counter();
    core.SYST.enable_interrupt();
    let mut uart = uart::Uart::take();

    hprintln!("silt-fw: {} ({}) sending {} samples", config.device, FIRMWARE, config.count);
    let identity =
        Identity { device: config.device, key: config.key, firmware: FIRMWARE, module: running_module };
    let mut link: Backlog<'_, Queued<'_>, WINDOW_FRAMES> = Backlog::new(identity, LINK);
    link.handle_connected();
    let mut deframer = Deframer::new();
    let mut rx = [0u8; RX_CHUNK_BYTES];
    let mut tx = [0u8; TRANSMIT_BYTES_MAX];
    let mut queued = 0;
    let mut reported = None;
    let mut bytes_sent = 0u64;
    // Of which module state frames (module delivery's answers), so that a summary can tell the
    // readings' traffic from a deploy's.
    #[cfg_attr(not(feature = "wasm"), allow(unused_mut))]
    let mut state_bytes_sent = 0u64;
    let mut last_queued_ms = 0;
    // Samples numbered apart from frames (`only=` with the device tier): a sample the module
    // leaves nothing of is not sent at all.
    #[cfg(feature = "wasm")]
    let numbered = config.only.is_some();
    #[cfg(not(feature = "wasm"))]
    let numbered = false;
    #[cfg(feature = "wasm")]
    let mut next_sample: Option<u32> = None;
    // Only numbered samples are ever left out, and only the `wasm` build numbers them.
    #[cfg_attr(not(feature = "wasm"), allow(unused_mut))]
    let mut skipped = 0u32;
    // The version whose package is arriving, and since when (for the deploy time).
    #[cfg(feature = "wasm")]
    let mut receiving_since: Option<(u32, u64)> = None;
    // The module's state comes back from the flash once the first hello's ack says which
    // sample the bridge has last, before any sample is processed.
    #[cfg(feature = "wasm")]
    let mut restore_due = flash;
    loop {
        let received = uart.read_available(&mut rx);
        #[cfg(feature = "wasm")]
        let handled =
            link.handle_stream_delivering(&mut deframer, &rx[..received], now_ms(), &mut receiver, slot);
        #[cfg(not(feature = "wasm"))]
        let handled = link.handle_stream(&mut deframer, &rx[..received], now_ms());
        let verdict = match handled {
            Verdict::Continue => link.handle_timeout(now_ms()),
            ended => ended,
        };
        #[cfg(feature = "wasm")]
        {
            let receiving = receiver.state(config.device).receiving;
            if receiving != 0 && receiving_since.is_none_or(|(v, _)| v != receiving) {
                receiving_since = Some((receiving, now_ms()));
            }
            if let Some((version, len)) = receiver.pending() {
                let since = receiving_since.map_or(0, |(_, t)| t);
                let trusted = &config.trusted[..config.trusted_count];
                let package = &slot[..len];
                install(
                    &mut processor.borrow_mut(),
                    &mut receiver,
                    package,
                    version,
                    trusted,
                    now_ms() - since,
                );
                if flash && receiver.running() == version {
                    flash::save_module(package);
                }
                link.set_module(receiver.running());
            }
        }
        #[cfg(feature = "wasm")]
        if restore_due {
            if let Some(first) = link.link().first_unacked_seq() {
                restore_due = false;
                restore_state(&mut processor.borrow_mut(), first - 1);
            }
        }
        match verdict {
            Verdict::Continue => {}
            Verdict::Reconnect(why) => {
                hprintln!("silt-fw: {}; saying hello again", why);
                link.handle_connected();
            }
            Verdict::Refused { reason, verified } => {
                let how = if verified { "" } else { " (unverified hints)" };
                heprintln!("silt-fw: refused by the bridge: {}{}", reason.as_str(), how);
                exit(false)
            }
        }
        report_progress(&link, config.count, &mut reported);
        let s = *link.link().stats();
        let done = match numbered {
            true => queued == config.count && link.is_empty(),
            false => s.acked == u64::from(config.count),
        };
        if done {
            if numbered {
                hprintln!(
                    "silt-fw: {} samples: {} sent, {} not (the module left nothing)",
                    queued,
                    s.acked,
                    skipped
                );
            }
            hprintln!(
                "silt-fw: done {} frames, {} retransmits, {} sent, {} bytes ({} in module states), {} hellos, {} nacks, {} dropped, {} ms",
                s.acked,
                s.retransmits,
                s.data_sent,
                bytes_sent,
                state_bytes_sent,
                s.hellos,
                s.nacks_total(),
                s.bad_replies + u64::from(uart.dropped()),
                now_ms()
            );
            #[cfg(feature = "wasm")]
            hprintln!("silt-fw: {}", processor::summary(&processor.borrow()));
            exit(true)
        }
        while queued < config.count
            && link.len() < WINDOW_FRAMES
            && (config.period_ms == 0 || queued == 0 || now_ms() >= last_queued_ms + config.period_ms)
        {
            // Numbered samples are numbered from the first frame the bridge lacks: until the
            // first hello's ack there is no number to give.
            let first = link.link().first_unacked_seq();
            if numbered && first.is_none() {
                break;
            }
            last_queued_ms = now_ms();
            #[cfg_attr(not(feature = "wasm"), allow(unused_mut))]
            let mut item = Queued {
                tick_ms: now_ms(),
                clock: config.clock,
                only: config.only,
                sample: None,
                #[cfg(feature = "wasm")]
                processor: Some(&processor),
                #[cfg(feature = "wasm")]
                processed: core::cell::OnceCell::new(),
                #[cfg(not(feature = "wasm"))]
                _processor: core::marker::PhantomData,
            };
            queued += 1;
            #[cfg(feature = "wasm")]
            if numbered {
                let n = *next_sample.get_or_insert(first.unwrap_or(1));
                next_sample = Some(n + 1);
                item.sample = Some(n);
                if !take_numbered(&item, n, &processor) {
                    skipped += 1;
                    continue;
                }
            }
            link.push(item);
        }
        while let Some(n) = link.poll_transmit(now_ms(), &mut tx) {
            uart.write_all(&tx[..n]);
            bytes_sent += n as u64;
        }
        #[cfg(feature = "wasm")]
        {
            if let Some(why) = processor.borrow_mut().take_stop() {
                heprintln!("silt-fw: processor stopped: {}; sending raw readings", why);
                receiver.stopped(format_args!("{why}"));
                // The next hello says the device runs no module.
                link.set_module(0);
            }
            receiver.handle_timeout(now_ms());
            if link.is_streaming() && receiver.take_state_due() {
                let n = link.encode_module_state(&receiver, &mut tx);
                uart.write_all(&tx[..n]);
                bytes_sent += n as u64;
                state_bytes_sent += n as u64;
            }
        }
        if received == 0 {
            uart.wait();
        }
    }
}

/// Prints the first hello's ack, and every [`PROGRESS_EVERY_SAMPLES`] acked samples one line
/// with the readings of the last of them.
fn report_progress(link: &Backlog<'_, Queued<'_>, WINDOW_FRAMES>, count: u32, reported: &mut Option<u64>) {
    let Some(next) = link.link().first_unacked_seq() else {
        return;
    };
    let acked = link.link().stats().acked;
    let Some(last) = *reported else {
        hprintln!(
            "silt-fw: hello acked at {}, sending seq {}..={}",
            next - 1,
            next,
            u64::from(next - 1) + u64::from(count)
        );
        *reported = Some(acked);
        return;
    };
    let every = u64::from(PROGRESS_EVERY_SAMPLES);
    if acked / every > last / every {
        let seq = next - 1;
        let s = sensor::sample(seq);
        hprintln!(
            "silt-fw: acked {}/{} (seq {}: {:.2} C, {:.1} %, {:.3} V), {} retransmits",
            acked,
            count,
            seq,
            s.temperature_c,
            s.humidity_pct,
            s.supply_v,
            link.link().stats().retransmits
        );
        *reported = Some(acked);
    }
}

/// Loads the module the command line names, if any, and starts it.
#[cfg(feature = "wasm")]
fn start_processor(
    config: &provision::Config<'_>,
    p: &mut processor::Processor<'_>,
) -> Result<(), alloc::string::String> {
    let Some(path) = config.module else {
        return Ok(());
    };
    let wasm = provision::read_host_file(path).map_err(|e| alloc::format!("{e}: {path}"))?;
    let params = &config.params[..config.param_count];
    p.start(config.module_version, config.input, &wasm, params)
        .map_err(|e| alloc::format!("processor {path} did not start: {e}"))?;
    hprintln!(
        "silt-fw: processor {} ({} bytes) on {} readings, heap {} bytes used",
        path,
        wasm.len(),
        config.input.name(),
        heap_used()
    );
    Ok(())
}

/// Processes numbered sample `n` when it is taken (through the module, if one runs), and
/// keeps what it made in `item`; false when the module left nothing of it, so that no frame is
/// needed.
#[cfg(feature = "wasm")]
fn take_numbered(item: &Queued<'_>, n: u32, p: &processor::Shared<'_>) -> bool {
    let raw = sensor::readings(n, item.only);
    let processed = p.borrow_mut().process(n, item.time(n), &raw);
    if matches!(&processed, processor::Processed::Outputs { outputs, .. } if outputs.is_empty()) {
        return false;
    }
    let _ = item.processed.set(processed);
    true
}

/// Bytes of the heap in use.
#[cfg(feature = "wasm")]
fn heap_used() -> usize {
    // Not `HEAP.used()`: in embedded-alloc 0.7.0 it borrows the heap twice and panics.
    HEAP_BYTES - HEAP.free()
}

/// Installs the whole package of `version` in the slot (`processor::Processor::install`: its
/// hash, its signature by one of the `trusted` keys when there are any, and a start) and
/// switches to it, or leaves the running module as it is; the receiver reports which.
#[cfg(feature = "wasm")]
fn install(
    p: &mut processor::Processor<'_>,
    receiver: &mut Receiver,
    package: &[u8],
    version: u32,
    trusted: &[[u8; 32]],
    took_ms: u64,
) {
    match p.install(package, version, trusted) {
        Ok(installed) => {
            hprintln!(
                "silt-fw: switched to module v{} ({} bytes, package of {} in {} ms) on {} readings, heap {} bytes used",
                version,
                installed.module_bytes,
                package.len(),
                took_ms,
                installed.input.name(),
                heap_used()
            );
            receiver.switched(version);
        }
        Err(why) => {
            heprintln!("silt-fw: {}", why);
            receiver.refused(format_args!("{why}"));
        }
    }
}

/// Starts the module package the flash keeps, if any, as at the end of its delivery.
#[cfg(feature = "wasm")]
fn start_saved_module(p: &mut processor::Processor<'_>, trusted: &[[u8; 32]]) {
    let Some(package) = flash::saved_module() else { return };
    let Ok((manifest, _)) = silt_frame::open_package(&package) else {
        heprintln!("silt-fw: flash: the module package kept is damaged; running none");
        return;
    };
    let version = manifest.version;
    match p.install(&package, version, trusted) {
        Ok(installed) => hprintln!(
            "silt-fw: started module v{} from flash ({} bytes) on {} readings",
            version,
            installed.module_bytes,
            installed.input.name()
        ),
        Err(why) => heprintln!("silt-fw: flash: {}", why),
    }
}

/// Puts back the running module's state after sample `acked` (the last the bridge has) from
/// the flash; without it, the module goes on from where it started.
#[cfg(feature = "wasm")]
fn restore_state(p: &mut processor::Processor<'_>, acked: u32) {
    let version = p.version();
    if version == 0 || acked == 0 {
        return;
    }
    match flash::state_after(version, acked) {
        Some((sample, state)) => match p.restore(&state) {
            Ok(()) => {
                hprintln!("silt-fw: restored module v{}'s state after sample {} from flash", version, sample)
            }
            Err(why) => heprintln!("silt-fw: processor stopped: {}; sending raw readings", why),
        },
        None => hprintln!(
            "silt-fw: no state of module v{} in flash up to sample {}: it starts fresh",
            version,
            acked
        ),
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
