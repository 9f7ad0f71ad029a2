//! MC146818 RTC and CMOS memory at ports 0x70 (index) and 0x71 (data),
//! IRQ 8.
//!
//! The clock follows host wall-clock time plus whatever offset the guest
//! sets; the memory-size bytes tell firmware how much RAM there is
//! (docs/machine.md, "Memory map"). Update, alarm and periodic flags are derived from the
//! host clock whenever they are looked at, so the guest sees them in
//! register C whether or not it enabled their interrupts; the interrupt
//! itself is raised by [`run_timer`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::memory::{Layout, MIB};

mod persist;

pub const CMOS_BASE: u64 = 0x70;
pub const CMOS_LEN: u64 = 2;
pub const RTC_IRQ: u32 = 8;

const SECONDS: usize = 0x00;
const SECONDS_ALARM: usize = 0x01;
const MINUTES: usize = 0x02;
const MINUTES_ALARM: usize = 0x03;
const HOURS: usize = 0x04;
const HOURS_ALARM: usize = 0x05;
const DAY_OF_WEEK: usize = 0x06;
const DAY_OF_MONTH: usize = 0x07;
const MONTH: usize = 0x08;
const YEAR: usize = 0x09;
const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const CENTURY: usize = 0x32;

const A_UIP: u8 = 0x80;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const D_VRT: u8 = 0x80;
/// An alarm byte with the two top bits set matches any value.
const ALARM_DONT_CARE: u8 = 0xc0;
/// UIP is raised this long before each second ticks over.
const UIP_WINDOW: Duration = Duration::from_micros(244);

/// Broken-down calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
}

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_unix(secs: i64) -> DateTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    DateTime {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

fn to_bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    u32::from(v >> 4) * 10 + u32::from(v & 0x0f)
}

fn host_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub struct Cmos {
    index: usize,
    nmi_disabled: bool,
    ram: [u8; 128],
    /// Guest clock minus host clock, in seconds.
    offset: i64,
    /// Host time up to which flags in register C are accounted for.
    flags_time: Duration,
    /// Periodic ticks are counted from here.
    periodic_epoch: Instant,
    periodic_ticks: u64,
    irq: EventFd,
}

impl Cmos {
    pub fn new(layout: &Layout, vcpus: u32, irq: EventFd) -> Cmos {
        let mut ram = [0u8; 128];
        ram[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
        ram[REG_B] = B_24H;
        ram[REG_D] = D_VRT;
        // Conventional memory in KiB.
        ram[0x15] = (640u16 & 0xff) as u8;
        ram[0x16] = (640u16 >> 8) as u8;
        // Extended memory above 1 MiB in KiB, as much as fits.
        let ext_kib = (layout.low_ram_above_1m() / 1024).min(0xffff) as u16;
        for reg in [0x17, 0x30] {
            ram[reg] = ext_kib as u8;
            ram[reg + 1] = (ext_kib >> 8) as u8;
        }
        // Memory between 16 MiB and 4 GiB in 64 KiB units.
        let above_16m = (layout.low_ram_end().saturating_sub(16 * MIB) >> 16).min(0xffff) as u16;
        ram[0x34] = above_16m as u8;
        ram[0x35] = (above_16m >> 8) as u8;
        // Memory above 4 GiB in 64 KiB units (24 bits).
        let above_4g = (layout.ram_above_4g() >> 16).min(0xff_ffff) as u32;
        ram[0x5b] = above_4g as u8;
        ram[0x5c] = (above_4g >> 8) as u8;
        ram[0x5d] = (above_4g >> 16) as u8;
        ram[0x5f] = vcpus.saturating_sub(1).min(255) as u8;
        ram[0x14] = 0x02; // equipment: math coprocessor present
        Cmos {
            index: 0,
            nmi_disabled: false,
            ram,
            offset: 0,
            flags_time: host_now(),
            periodic_epoch: Instant::now(),
            periodic_ticks: 0,
            irq,
        }
    }

    fn binary(&self) -> bool {
        self.ram[REG_B] & B_BINARY != 0
    }

    fn encode(&self, v: u32) -> u8 {
        if self.binary() { v as u8 } else { to_bcd(v) }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.binary() {
            u32::from(v)
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.ram[REG_B] & B_24H != 0 {
            return self.encode(hour);
        }
        let pm = hour >= 12;
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if pm { 0x80 } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> u32 {
        if self.ram[REG_B] & B_24H != 0 {
            return self.decode(v);
        }
        let h12 = self.decode(v & 0x7f) % 12;
        if v & 0x80 != 0 { h12 + 12 } else { h12 }
    }

    fn guest_time(&self, host: Duration) -> DateTime {
        civil_from_unix(host.as_secs() as i64 + self.offset)
    }

    /// Loads the clock registers from the guest clock.
    fn latch_time(&mut self, host: Duration) {
        let t = self.guest_time(host);
        self.ram[SECONDS] = self.encode(t.second);
        self.ram[MINUTES] = self.encode(t.minute);
        self.ram[HOURS] = self.encode_hour(t.hour);
        self.ram[DAY_OF_WEEK] = self.encode(t.weekday + 1);
        self.ram[DAY_OF_MONTH] = self.encode(t.day);
        self.ram[MONTH] = self.encode(t.month);
        self.ram[YEAR] = self.encode(t.year.rem_euclid(100) as u32);
        self.ram[CENTURY] = self.encode(t.year.div_euclid(100) as u32);
    }

    /// The guest finished setting the clock: adopt the registers as the
    /// new time.
    fn adopt_time(&mut self, host: Duration) {
        let century = self.decode(self.ram[CENTURY]);
        let year = i64::from(if century >= 19 { century } else { 20 }) * 100
            + i64::from(self.decode(self.ram[YEAR]));
        let month = self.decode(self.ram[MONTH]).clamp(1, 12);
        let day = self.decode(self.ram[DAY_OF_MONTH]).clamp(1, 31);
        let secs = days_from_civil(year, month, day) * 86_400
            + i64::from(self.decode_hour(self.ram[HOURS]).min(23)) * 3600
            + i64::from(self.decode(self.ram[MINUTES]).min(59)) * 60
            + i64::from(self.decode(self.ram[SECONDS]).min(59));
        self.offset = secs - host.as_secs() as i64;
    }

    fn alarm_matches(&self, t: &DateTime) -> bool {
        let check = |alarm: usize, value: u8| {
            let a = self.ram[alarm];
            a & ALARM_DONT_CARE == ALARM_DONT_CARE || a == value
        };
        check(SECONDS_ALARM, self.encode(t.second))
            && check(MINUTES_ALARM, self.encode(t.minute))
            && check(HOURS_ALARM, self.encode_hour(t.hour))
    }

    /// Periodic interrupt period for the rate in register A, if any.
    fn periodic_period(&self) -> Option<Duration> {
        let rate = u32::from(self.ram[REG_A] & 0x0f);
        let rate = match rate {
            0 => return None,
            1 | 2 => rate + 7,
            r => r,
        };
        let hz = 32_768u64 >> (rate - 1);
        Some(Duration::from_nanos(1_000_000_000 / hz))
    }

    /// Accounts for clock ticks up to `host` in register C. Returns true if
    /// an enabled event newly raised IRQF.
    fn advance(&mut self, host: Duration) -> bool {
        let before = self.ram[REG_C];
        if self.ram[REG_B] & B_SET == 0 && host.as_secs() > self.flags_time.as_secs() {
            self.ram[REG_C] |= C_UF;
            if self.alarm_matches(&self.guest_time(host)) {
                self.ram[REG_C] |= C_AF;
            }
        }
        self.flags_time = host;
        if let Some(period) = self.periodic_period() {
            let ticks = (self.periodic_epoch.elapsed().as_nanos() / period.as_nanos()) as u64;
            if ticks > self.periodic_ticks {
                self.periodic_ticks = ticks;
                self.ram[REG_C] |= C_PF;
            }
        }
        let enabled = self.ram[REG_B] & (B_PIE | B_AIE | B_UIE);
        let pending = self.ram[REG_C] & (C_PF | C_AF | C_UF);
        // Enable bits and flag bits share positions (PIE/PF, AIE/AF, UIE/UF).
        if enabled & pending != 0 {
            self.ram[REG_C] |= C_IRQF;
        }
        before & C_IRQF == 0 && self.ram[REG_C] & C_IRQF != 0
    }

    fn raise_if(&self, newly: bool) {
        if newly {
            let _ = self.irq.write(1);
        }
    }

    fn read_register(&mut self, index: usize) -> u8 {
        let host = host_now();
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY => {
                if self.ram[REG_B] & B_SET == 0 {
                    self.latch_time(host);
                }
                self.ram[index]
            }
            REG_A => {
                let in_update = self.ram[REG_B] & B_SET == 0
                    && Duration::from_secs(1)
                        - Duration::from_nanos(u64::from(host.subsec_nanos()))
                        <= UIP_WINDOW;
                self.ram[REG_A] | if in_update { A_UIP } else { 0 }
            }
            REG_C => {
                // Reading C acknowledges everything it reports.
                self.advance(host);
                let value = self.ram[REG_C];
                self.ram[REG_C] = 0;
                value
            }
            REG_D => D_VRT,
            _ => self.ram[index],
        }
    }

    fn write_register(&mut self, index: usize, value: u8) {
        let host = host_now();
        match index {
            REG_A => {
                let old_rate = self.ram[REG_A] & 0x0f;
                self.ram[REG_A] = value & !A_UIP;
                if value & 0x0f != old_rate {
                    self.periodic_epoch = Instant::now();
                    self.periodic_ticks = 0;
                }
            }
            REG_B => {
                let old = self.ram[REG_B];
                if old & B_SET == 0 && value & B_SET != 0 {
                    // Freeze the registers for the guest to rewrite.
                    self.latch_time(host);
                }
                self.ram[REG_B] = value;
                if old & B_SET != 0 && value & B_SET == 0 {
                    self.adopt_time(host);
                }
                let newly = self.advance(host);
                self.raise_if(newly);
            }
            REG_C | REG_D => {}
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY => {
                if self.ram[REG_B] & B_SET == 0 {
                    // Writing a time field without SET: take it as a new
                    // time at once, as a guest setting one field expects.
                    self.latch_time(host);
                    self.ram[index] = value;
                    self.adopt_time(host);
                } else {
                    self.ram[index] = value;
                }
            }
            _ => self.ram[index] = value,
        }
    }

    /// When the timer thread must next look at the clock, if an interrupt
    /// is enabled.
    fn next_deadline(&self) -> Option<Duration> {
        let b = self.ram[REG_B];
        let mut next: Option<Duration> = None;
        if b & B_PIE != 0
            && let Some(period) = self.periodic_period()
        {
            let due = period * (self.periodic_ticks as u32 + 1);
            next = Some(due.saturating_sub(self.periodic_epoch.elapsed()));
        }
        if b & (B_UIE | B_AIE) != 0 {
            let host = host_now();
            let to_next_second =
                Duration::from_secs(1) - Duration::from_nanos(u64::from(host.subsec_nanos()));
            next = Some(next.map_or(to_next_second, |n| n.min(to_next_second)));
        }
        next
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = match offset {
            0 => 0xff,
            _ => self.read_register(self.index),
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 => {
                self.index = usize::from(data[0] & 0x7f);
                self.nmi_disabled = data[0] & 0x80 != 0;
            }
            _ => self.write_register(self.index, data[0]),
        }
    }
}

/// Raises IRQ 8 for the periodic, update and alarm interrupts the guest
/// enabled. Sleeps while none is enabled; checks at least every 100 ms so a
/// newly enabled interrupt starts promptly. Returns when `stop` says so.
pub fn run_timer(cmos: Arc<Mutex<Cmos>>, stop: impl Fn() -> bool, paused: impl Fn() -> bool) {
    let idle = Duration::from_millis(100);
    while !stop() {
        let wait = {
            let guard = cmos.lock().unwrap_or_else(|e| e.into_inner());
            guard.next_deadline().unwrap_or(idle).min(idle)
        };
        std::thread::sleep(wait.max(Duration::from_micros(100)));
        if paused() {
            continue;
        }
        let mut guard = cmos.lock().unwrap_or_else(|e| e.into_inner());
        if guard.ram[REG_B] & (B_PIE | B_UIE | B_AIE) != 0 {
            let newly = guard.advance(host_now());
            guard.raise_if(newly);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GIB;

    fn cmos(mem: u64) -> Cmos {
        Cmos::new(&Layout::new(mem), 1, EventFd::new(0).unwrap())
    }

    fn read(c: &mut Cmos, reg: u8) -> u8 {
        c.write(0, &[reg]);
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    fn write(c: &mut Cmos, reg: u8, v: u8) {
        c.write(0, &[reg]);
        c.write(1, &[v]);
    }

    #[test]
    fn calendar_round_trip() {
        for secs in [0i64, 951_782_400, 1_700_000_000, 4_102_444_800, 946_684_799] {
            let t = civil_from_unix(secs);
            let back = days_from_civil(t.year, t.month, t.day) * 86_400
                + i64::from(t.hour * 3600 + t.minute * 60 + t.second);
            assert_eq!(back, secs);
        }
        let t = civil_from_unix(951_782_400); // 2000-02-29
        assert_eq!((t.year, t.month, t.day, t.weekday), (2000, 2, 29, 2));
    }

    #[test]
    fn memory_size_registers() {
        let mut c = cmos(512 * MIB);
        assert_eq!(
            u16::from_le_bytes([read(&mut c, 0x15), read(&mut c, 0x16)]),
            640
        );
        assert_eq!(
            u16::from_le_bytes([read(&mut c, 0x17), read(&mut c, 0x18)]),
            0xffff
        );
        let above_16m = u16::from_le_bytes([read(&mut c, 0x34), read(&mut c, 0x35)]);
        assert_eq!(u64::from(above_16m) << 16, 512 * MIB - 16 * MIB);
        assert_eq!(read(&mut c, 0x5b), 0);

        let mut c = cmos(8 * GIB);
        let above_4g = u32::from_le_bytes([
            read(&mut c, 0x5b),
            read(&mut c, 0x5c),
            read(&mut c, 0x5d),
            0,
        ]);
        assert_eq!(u64::from(above_4g) << 16, 8 * GIB - 0xF000_0000);
        let mut c = Cmos::new(&Layout::new(GIB), 4, EventFd::new(0).unwrap());
        assert_eq!(read(&mut c, 0x5f), 3);
    }

    #[test]
    fn clock_reads_host_time_in_bcd_and_can_be_set() {
        let mut c = cmos(64 * MIB);
        let now = civil_from_unix(host_now().as_secs() as i64);
        assert_eq!(from_bcd(read(&mut c, YEAR as u8)), (now.year % 100) as u32);
        assert_eq!(
            from_bcd(read(&mut c, CENTURY as u8)),
            (now.year / 100) as u32
        );
        assert_eq!(read(&mut c, REG_D as u8), D_VRT);

        // Set 1999-12-31 23:59:58 in binary 24-hour mode.
        write(&mut c, REG_B as u8, B_SET | B_24H | B_BINARY);
        for (reg, v) in [
            (YEAR, 99),
            (CENTURY, 19),
            (MONTH, 12),
            (DAY_OF_MONTH, 31),
            (HOURS, 23),
            (MINUTES, 59),
            (SECONDS, 58),
        ] {
            write(&mut c, reg as u8, v);
        }
        write(&mut c, REG_B as u8, B_24H | B_BINARY);
        assert_eq!(read(&mut c, YEAR as u8), 99);
        assert_eq!(read(&mut c, MONTH as u8), 12);
    }

    #[test]
    fn twelve_hour_mode() {
        let mut c = cmos(64 * MIB);
        c.ram[REG_B] = 0;
        assert_eq!(c.encode_hour(0), 0x12);
        assert_eq!(c.encode_hour(13), 0x81);
        assert_eq!(c.decode_hour(0x81), 13);
        assert_eq!(c.decode_hour(0x12), 0);
    }

    #[test]
    fn update_flag_appears_after_a_second() {
        let mut c = cmos(64 * MIB);
        let _ = read(&mut c, REG_C as u8);
        std::thread::sleep(Duration::from_millis(1100));
        let v = read(&mut c, REG_C as u8);
        assert_ne!(v & C_UF, 0);
        assert_eq!(v & C_IRQF, 0, "not enabled, no IRQF");
        assert_eq!(read(&mut c, REG_C as u8) & C_UF, 0, "cleared by reading");
    }

    #[test]
    fn enabled_periodic_interrupt_fires() {
        let irq = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let cmos = Arc::new(Mutex::new(Cmos::new(
            &Layout::new(64 * MIB),
            1,
            irq.try_clone().unwrap(),
        )));
        {
            let mut c = cmos.lock().unwrap();
            write(&mut c, REG_A as u8, 0x2f); // 2 Hz
            write(&mut c, REG_B as u8, B_24H | B_PIE);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let t = {
            let cmos = cmos.clone();
            std::thread::spawn(move || {
                run_timer(
                    cmos,
                    move || s.load(std::sync::atomic::Ordering::SeqCst),
                    || false,
                )
            })
        };
        std::thread::sleep(Duration::from_millis(700));
        assert!(irq.read().is_ok(), "IRQ 8 raised");
        let v = read(&mut cmos.lock().unwrap(), REG_C as u8);
        assert_ne!(v & (C_IRQF | C_PF), 0);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        t.join().unwrap();
    }
}
