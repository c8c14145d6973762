//! Silt firmware for the ESP32-C3: joins WiFi, connects to the Silt bridge over TCP and sends
//! one data frame a second (the chip's temperature and its free heap), with the exchange of
//! `docs/device-frames.md`.
//!
//! Tasks: `wifi_task` keeps the station joined; `net_task` runs the IP stack (embassy-net);
//! `sample_task` takes a sample every second and queues it; the main task owns the [`Link`] and
//! the TCP connection and moves bytes between them. The protocol rules (numbering, window,
//! retransmission, what a nack means) live in `silt-link`, set up by the library's `link`
//! module, and are tested on the host; this file is glue and deliberately holds no protocol
//! decisions.
//!
//! With feature `wasm` (built by scripts/firmware-esp32c3.sh beside the plain firmware) it
//! also runs the device tier: a processor module delivered over the link (`silt device
//! deploy`) runs on the temperature readings before they are sent (`Device`, and the library's
//! `tier` module for this chip's limits; `atomics` supplies the read-modify-write the
//! interpreter needs on a chip without atomic instructions).

#![no_std]
#![no_main]

#[cfg(feature = "wasm")]
mod atomics;

use core::future::Future;
use core::net::Ipv4Addr;

use embassy_executor::Spawner;
use embassy_futures::select::{Either, Either3, select, select3};
use embassy_net::{Runner, Stack, StackResources, tcp::TcpSocket};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::{Channel, TrySendError};
use embassy_time::{Duration, Ticker, Timer, with_timeout};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::rng::Rng;
use esp_hal::time::Instant;
use esp_hal::timer::timg::TimerGroup;
use esp_hal::tsens::{self, TemperatureSensor};
use esp_radio::wifi::WifiController;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{AuthenticationMethodConfig, Config as WifiConfig, ControllerConfig, Interface};
use log::{error, info, warn};
use silt_frame::Deframer;
use silt_fw_esp32c3::link::{self, Identity, Link, Queued, Sample, TRANSMIT_BYTES_MAX, Verdict};
use silt_fw_esp32c3::settings;
#[cfg(feature = "wasm")]
use silt_fw_esp32c3::tier;
#[cfg(feature = "wasm")]
use silt_link::Receiver;
use static_cell::StaticCell;

esp_bootloader_esp_idf::esp_app_desc!();

/// Sent in the hello, for the bridge's logs.
const FIRMWARE: &str = concat!("silt-fw-esp32c3 ", env!("CARGO_PKG_VERSION"));

/// One sample, so one data frame, per second.
const SAMPLE_PERIOD_MS: u64 = 1_000;
/// Samples between the sampler and the main task. The main task takes them whenever it waits,
/// so the queue only has to bridge a TCP write stalled on a full send buffer; when it is full the
/// sampler drops the oldest.
const SAMPLE_QUEUE_MAX: usize = 8;
static SAMPLES: Channel<CriticalSectionRawMutex, Sample, SAMPLE_QUEUE_MAX> = Channel::new();

/// Backoff between failed bridge connections: doubled from the minimum after each failure.
const RECONNECT_BACKOFF_MIN_MS: u64 = 1_000;
const RECONNECT_BACKOFF_MAX_MS: u64 = 30_000;
/// Wait after the bridge refused the device itself (bad tag, unknown device, revoked): only an
/// operator can fix that (`silt device add`, or a rebuild with the right key), so the device
/// asks again once a minute rather than hammering the bridge.
const REFUSED_BACKOFF_MS: u64 = 60_000;
/// Backoff between failed WiFi joins.
const WIFI_BACKOFF_MIN_MS: u64 = 1_000;
const WIFI_BACKOFF_MAX_MS: u64 = 30_000;
/// Bound on a TCP connect (SYN retries included).
const TCP_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// TCP keep-alive, and the silence after which the socket counts the peer as gone. The bridge
/// answers every data frame, one a second, so 30 s of silence means it is not there.
const TCP_KEEP_ALIVE_MS: u64 = 10_000;
const TCP_TIMEOUT_MS: u64 = 30_000;
/// Socket buffers. Replies are 26 to 40 bytes stuffed; the send side holds the in-flight window
/// (8 data frames of about 60 bytes) several times over.
const TCP_RX_BYTES: usize = 1024;
const TCP_TX_BYTES: usize = 2048;
/// Longest wait for the next event when the link has no deadline (it always has one while
/// frames are in flight).
const IDLE_WAIT_MS: u64 = 60_000;
/// Pause between printing a panic and resetting.
const PANIC_RESET_DELAY_MS: u32 = 1_000;
/// Sockets: DHCP and the bridge connection, plus one spare.
const SOCKETS_MAX: usize = 3;

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    esp_println::logger::init_logger(log::LevelFilter::Info);
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));

    // The WiFi driver allocates its buffers (about 50 KB for a station) from the heap: the RAM
    // the second-stage bootloader used, reclaimed, plus a regular region.
    esp_alloc::heap_allocator!(#[esp_hal::ram(reclaimed)] size: 64 * 1024);
    esp_alloc::heap_allocator!(size: 36 * 1024);
    // The device tier's region: the module, its compiled code and its linear memory.
    #[cfg(feature = "wasm")]
    esp_alloc::heap_allocator!(size: tier::HEAP_BYTES);

    // The scheduler must run before the radio starts; it also drives embassy-time.
    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    info!("{FIRMWARE}: device {:?}, bridge {}", settings::DEVICE, settings::BRIDGE_ADDR.value);
    for s in settings::ALL {
        if !s.from_env {
            // Defaults are no secrets: an empty password, an all-zero key.
            warn!("{} was not set at build time: using the default {:?}", s.name, s.value);
        }
    }
    if !settings::WIFI_SSID.from_env {
        error!(
            "built without SILT_WIFI_SSID: the placeholder network {:?} does not exist, so WiFi \
             will not connect. Rebuild with SILT_WIFI_SSID and SILT_WIFI_PASSWORD set.",
            settings::SSID
        );
    }
    if !settings::DEVICE_KEY.from_env {
        error!(
            "built without SILT_DEVICE_KEY: the bridge will refuse this device (bad tag). Rebuild \
             with the key `silt device add {}` printed.",
            settings::DEVICE
        );
    }

    #[cfg(feature = "wasm")]
    match settings::TRUSTED {
        [] => warn!("SILT_MODULE_TRUST was not set at build time: modules are taken unsigned"),
        _ => info!("modules must be signed with {}", settings::MODULE_TRUST.value),
    }

    let sensor = match TemperatureSensor::new(peripherals.TSENS, tsens::Config::default()) {
        Ok(sensor) => sensor,
        Err(e) => panic!("temperature sensor: {e:?}"),
    };

    let station = Interface::station();
    let controller = match WifiController::new(
        peripherals.WIFI,
        ControllerConfig::default().with_initial_config(station_config()),
    ) {
        Ok(controller) => controller,
        Err(e) => panic!("WiFi driver: {e:?}"),
    };

    // Seeds TCP sequence numbers and local ports. After the radio is up, which makes the RNG a
    // true random source.
    let rng = Rng::new();
    let seed = u64::from(rng.random()) << 32 | u64::from(rng.random());
    static RESOURCES: StaticCell<StackResources<SOCKETS_MAX>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        station,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );

    spawner.spawn(net_task(runner).expect("net_task is spawned once"));
    spawner.spawn(wifi_task(controller).expect("wifi_task is spawned once"));
    spawner.spawn(sample_task(sensor).expect("sample_task is spawned once"));

    run_link(stack, Device::new()).await
}

/// Core clock cycles since boot, for the processor's statistics: microseconds at the 160 MHz
/// the CPU runs at (`CpuClock::max()`).
#[cfg(feature = "wasm")]
fn now_cycles() -> u64 {
    Instant::now().duration_since_epoch().as_micros() * 160
}

/// The device tier, when built in: the processor the samples go through, and the receiver of
/// module packages with the slot they are written to. Without feature `wasm`, samples go out as
/// taken and module chunks are not taken (the bridge stops sending them once the device's
/// hello says it runs no module and no module state comes).
struct Device {
    #[cfg(feature = "wasm")]
    processor: &'static tier::Shared<'static>,
    #[cfg(feature = "wasm")]
    receiver: Receiver,
    #[cfg(feature = "wasm")]
    slot: &'static mut [u8],
}

impl Device {
    fn new() -> Device {
        #[cfg(feature = "wasm")]
        {
            static PROCESSOR: StaticCell<tier::Shared<'static>> = StaticCell::new();
            static SLOT: StaticCell<[u8; tier::SLOT_BYTES]> = StaticCell::new();
            let processor = tier::Processor::new(now_cycles, settings::DEVICE, tier::limits());
            Device {
                processor: PROCESSOR.init(core::cell::RefCell::new(processor)),
                receiver: Receiver::new(0),
                slot: SLOT.init([0; tier::SLOT_BYTES]),
            }
        }
        #[cfg(not(feature = "wasm"))]
        Device {}
    }

    /// What `sample` becomes in the backlog.
    fn queued(&self, sample: Sample) -> Queued<'static> {
        #[cfg(feature = "wasm")]
        return Queued::processed_by(sample, self.processor);
        #[cfg(not(feature = "wasm"))]
        Queued::raw(sample)
    }

    /// Received bytes into the link (and module chunks into the slot).
    fn handle_stream(&mut self, link: &mut Link<'_>, deframer: &mut Deframer, bytes: &[u8]) -> Verdict {
        #[cfg(feature = "wasm")]
        return link.handle_stream_delivering(deframer, bytes, now_ms(), &mut self.receiver, self.slot);
        #[cfg(not(feature = "wasm"))]
        link.handle_stream(deframer, bytes, now_ms())
    }

    /// Installs a whole package that arrived, and takes note of a module that stopped; the next
    /// hello names what runs.
    #[cfg_attr(not(feature = "wasm"), allow(unused_variables))]
    fn handle_module(&mut self, link: &mut Link<'_>) {
        #[cfg(feature = "wasm")]
        {
            if let Some((version, len)) = self.receiver.pending() {
                let mut processor = self.processor.borrow_mut();
                match processor.install(&self.slot[..len], version, settings::TRUSTED) {
                    Ok(installed) => {
                        info!(
                            "switched to module v{version} ({} bytes) on {} readings; heap {} bytes free",
                            installed.module_bytes,
                            installed.input.name(),
                            esp_alloc::HEAP.free()
                        );
                        self.receiver.switched(version);
                    }
                    Err(why) => {
                        warn!("{why}");
                        self.receiver.refused(format_args!("{why}"));
                    }
                }
                link.set_module(self.receiver.running());
            }
            if let Some(why) = self.processor.borrow_mut().take_stop() {
                warn!("processor stopped: {why}; sending raw readings");
                self.receiver.stopped(format_args!("{why}"));
                link.set_module(0);
            }
        }
    }

    /// When the module state is next due again (ms since boot), if it waits on a deadline.
    fn poll_timeout(&self) -> Option<u64> {
        #[cfg(feature = "wasm")]
        return self.receiver.poll_timeout();
        #[cfg(not(feature = "wasm"))]
        None
    }

    /// The module state frame, when one is due: after a hello's ack, after a kept chunk, and
    /// again with backoff until the bridge answers it.
    #[cfg_attr(not(feature = "wasm"), allow(unused_variables))]
    fn poll_module_state(&mut self, link: &Link<'_>, out: &mut [u8]) -> Option<usize> {
        #[cfg(feature = "wasm")]
        {
            self.receiver.handle_timeout(now_ms());
            if link.is_streaming() && self.receiver.take_state_due() {
                return Some(link.encode_module_state(&self.receiver, out));
            }
        }
        None
    }
}

/// esp-backtrace calls this once it has printed a panic's backtrace (feature `custom-halt`).
/// A device in the field should come back rather than hang: wait a second so a connected
/// monitor gets the whole backtrace, then reset. Unacked samples are lost; the next hello's ack
/// tells the device where to continue.
#[unsafe(no_mangle)]
pub extern "Rust" fn custom_halt() -> ! {
    esp_hal::delay::Delay::new().delay_millis(PANIC_RESET_DELAY_MS);
    esp_hal::system::software_reset()
}

fn station_config() -> WifiConfig {
    let ssid = settings::SSID.try_into().expect("the SSID length is checked at build time");
    let authentication = if settings::PASSWORD.is_empty() {
        AuthenticationMethodConfig::Open
    } else {
        AuthenticationMethodConfig::Wpa2Personal(
            settings::PASSWORD.try_into().expect("the password length is checked at build time"),
        )
    };
    WifiConfig::Station(StationConfig::default().with_ssid(ssid).with_authentication(authentication))
}

/// Milliseconds since boot: the device's tick for frames and the link's clock.
fn now_ms() -> u64 {
    Instant::now().duration_since_epoch().as_millis()
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Interface>) -> ! {
    runner.run().await
}

/// Joins the configured network and rejoins whenever the station is dropped.
#[embassy_executor::task]
async fn wifi_task(mut controller: WifiController<'static>) -> ! {
    let mut backoff_ms = WIFI_BACKOFF_MIN_MS;
    loop {
        info!("joining WiFi {:?}", settings::SSID);
        match controller.connect_async().await {
            Ok(joined) => {
                info!("joined WiFi {:?} on channel {}", settings::SSID, joined.channel);
                backoff_ms = WIFI_BACKOFF_MIN_MS;
                match controller.wait_for_disconnect_async().await {
                    Ok(left) => warn!("WiFi dropped: {:?}", left.reason),
                    Err(e) => warn!("WiFi dropped: {e:?}"),
                }
            }
            Err(e) => {
                warn!("WiFi join failed ({e:?}); retrying in {backoff_ms} ms");
                Timer::after_millis(backoff_ms).await;
                backoff_ms = (backoff_ms * 2).min(WIFI_BACKOFF_MAX_MS);
            }
        }
    }
}

/// Takes a sample every [`SAMPLE_PERIOD_MS`], connected or not.
#[embassy_executor::task]
async fn sample_task(sensor: TemperatureSensor<'static>) -> ! {
    let mut ticker = Ticker::every(Duration::from_millis(SAMPLE_PERIOD_MS));
    let mut dropped: u64 = 0;
    loop {
        ticker.next().await;
        let sample = Sample {
            tick_ms: now_ms(),
            temperature_c: sensor.get_temperature().to_celsius(),
            free_heap_bytes: u32::try_from(esp_alloc::HEAP.free()).unwrap_or(u32::MAX),
        };
        if let Err(TrySendError::Full(sample)) = SAMPLES.try_send(sample) {
            // The main task is stuck in a write: keep the newest samples.
            let _ = SAMPLES.try_receive();
            let _ = SAMPLES.try_send(sample);
            dropped += 1;
            warn!("sample queue full: {dropped} sample(s) dropped since boot");
        }
    }
}

/// Queues samples into the link while `fut` runs (waiting for WiFi, connecting, backing off),
/// so that sampling never stops.
async fn while_sampling<F: Future>(link: &mut Link<'static>, device: &Device, fut: F) -> F::Output {
    let take_samples = async {
        loop {
            push_sample(link, device.queued(SAMPLES.receive().await));
        }
    };
    match select(fut, take_samples).await {
        Either::First(output) => output,
        Either::Second(_) => unreachable!("taking samples never ends"),
    }
}

fn push_sample(link: &mut Link<'static>, sample: Queued<'static>) {
    if !link.push(sample) {
        let dropped = link.dropped();
        // Once a minute while it lasts: the backlog holds five minutes of samples.
        if dropped == 1 || dropped % 60 == 0 {
            warn!("backlog full: {dropped} unacked sample(s) dropped since boot");
        }
    }
}

/// How a connection ended.
enum Ended {
    /// Lost, or given up by the link: reconnect after the backoff.
    Lost(&'static str),
    /// The bridge refused the device: wait [`REFUSED_BACKOFF_MS`].
    Refused,
}

/// Connects to the bridge and runs the link over the connection, forever.
async fn run_link(stack: Stack<'static>, mut device: Device) -> ! {
    let identity = Identity { device: settings::DEVICE, key: settings::KEY, firmware: FIRMWARE, module: 0 };
    let mut link = Link::new(identity, link::CONFIG);
    let endpoint = (Ipv4Addr::from(settings::BRIDGE.ip), settings::BRIDGE.port);
    let mut rx_buffer = [0u8; TCP_RX_BYTES];
    let mut tx_buffer = [0u8; TCP_TX_BYTES];
    let mut backoff_ms = RECONNECT_BACKOFF_MIN_MS;
    loop {
        if !stack.is_config_up() {
            info!("waiting for WiFi and an IP address");
            while_sampling(&mut link, &device, stack.wait_config_up()).await;
            if let Some(config) = stack.config_v4() {
                info!("IP address {}", config.address);
            }
        }

        let mut socket = TcpSocket::new(stack, &mut rx_buffer, &mut tx_buffer);
        socket.set_timeout(Some(Duration::from_millis(TCP_TIMEOUT_MS)));
        socket.set_keep_alive(Some(Duration::from_millis(TCP_KEEP_ALIVE_MS)));
        // Frames are small and latency matters more than segment count.
        socket.set_nagle_enabled(false);
        info!("connecting to the bridge at {}", settings::BRIDGE_ADDR.value);
        let connect = with_timeout(Duration::from_millis(TCP_CONNECT_TIMEOUT_MS), socket.connect(endpoint));
        let ended = match while_sampling(&mut link, &device, connect).await {
            Ok(Ok(())) => {
                info!("connected; {} sample(s) waiting", link.len());
                let ended = run_connection(&mut socket, &mut link, &mut device).await;
                if link.is_streaming() {
                    backoff_ms = RECONNECT_BACKOFF_MIN_MS;
                }
                link.handle_disconnected();
                ended
            }
            Ok(Err(e)) => Ended::Lost(connect_error(e)),
            Err(_) => Ended::Lost("connect timed out"),
        };
        socket.abort();
        // Let the RST go out before the socket is dropped; bounded, the peer may be gone.
        let _ =
            while_sampling(&mut link, &device, with_timeout(Duration::from_secs(1), socket.flush())).await;
        drop(socket);

        let wait_ms = match ended {
            Ended::Lost(why) => {
                warn!("bridge connection ended: {why}; reconnecting in {backoff_ms} ms");
                let wait = backoff_ms;
                backoff_ms = (backoff_ms * 2).min(RECONNECT_BACKOFF_MAX_MS);
                wait
            }
            Ended::Refused => REFUSED_BACKOFF_MS,
        };
        while_sampling(&mut link, &device, Timer::after_millis(wait_ms)).await;
    }
}

fn connect_error(e: embassy_net::tcp::ConnectError) -> &'static str {
    match e {
        embassy_net::tcp::ConnectError::ConnectionReset => "connection refused",
        embassy_net::tcp::ConnectError::TimedOut => "connect timed out",
        embassy_net::tcp::ConnectError::NoRoute => "no route to the bridge",
        embassy_net::tcp::ConnectError::InvalidState => "socket in an invalid state",
    }
}

/// Moves bytes between the link and the socket until the connection ends.
async fn run_connection(socket: &mut TcpSocket<'_>, link: &mut Link<'static>, device: &mut Device) -> Ended {
    let mut deframer = Deframer::new();
    let mut out = [0u8; TRANSMIT_BYTES_MAX];
    let mut rx = [0u8; 256];
    link.handle_connected();
    loop {
        let timeouts = link.link().stats().ack_timeouts;
        let verdict = link.handle_timeout(now_ms());
        if link.link().stats().ack_timeouts > timeouts && verdict == Verdict::Continue {
            warn!(
                "no ack within {} ms: resending from seq {:?}",
                link::ACK_TIMEOUT_MS,
                link.link().first_unacked_seq()
            );
        }
        if let Some(ended) = act(link, verdict) {
            return ended;
        }
        while let Some(n) = link.poll_transmit(now_ms(), &mut out) {
            if let Err(why) = write_all(socket, &out[..n]).await {
                return Ended::Lost(why);
            }
        }
        device.handle_module(link);
        if let Some(n) = device.poll_module_state(link, &mut out) {
            if let Err(why) = write_all(socket, &out[..n]).await {
                return Ended::Lost(why);
            }
        }

        let deadline = match (link.poll_timeout(), device.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait_ms = deadline.map_or(IDLE_WAIT_MS, |t| t.saturating_sub(now_ms()));
        match select3(socket.read(&mut rx), SAMPLES.receive(), Timer::after_millis(wait_ms)).await {
            Either3::First(Ok(0)) => return Ended::Lost("the bridge closed the connection"),
            Either3::First(Err(_)) => return Ended::Lost("connection reset"),
            Either3::First(Ok(n)) => {
                let verdict = device.handle_stream(link, &mut deframer, &rx[..n]);
                if let Some(ended) = act(link, verdict) {
                    return ended;
                }
            }
            Either3::Second(sample) => push_sample(link, device.queued(sample)),
            Either3::Third(()) => {}
        }
    }
}

/// Logs a verdict that ends the connection, and says how it ended.
fn act(link: &Link<'_>, verdict: Verdict) -> Option<Ended> {
    match verdict {
        Verdict::Continue => None,
        Verdict::Reconnect(why) => Some(Ended::Lost(why)),
        Verdict::Refused { reason, verified } => {
            error!(
                "the bridge refused device {:?}: {}{}. Check `silt device list`, and that \
                 SILT_DEVICE_KEY is the key `silt device add` printed; retrying in {} s. {} \
                 sample(s) kept.",
                settings::DEVICE,
                reason.as_str(),
                if verified { "" } else { " (unverified nack, a hint only)" },
                REFUSED_BACKOFF_MS / 1_000,
                link.len(),
            );
            Some(Ended::Refused)
        }
    }
}

async fn write_all(socket: &mut TcpSocket<'_>, mut bytes: &[u8]) -> Result<(), &'static str> {
    while !bytes.is_empty() {
        match socket.write(bytes).await {
            Ok(0) => return Err("the connection no longer accepts data"),
            Ok(n) => bytes = &bytes[n..],
            Err(_) => return Err("connection reset while writing"),
        }
    }
    Ok(())
}
