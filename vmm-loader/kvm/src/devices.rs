//! The pod's only devices: COM1 and the i8042 reset line, on the port-I/O bus.

use std::io::Write;

use vm_superio::{I8042Device, Serial, Trigger};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// COM1.
pub const COM1: u16 = 0x3f8;
/// COM1's legacy IRQ.
pub const COM1_IRQ: u32 = 4;
/// i8042 data port; the command port is 0x64.
pub const I8042: u16 = 0x60;

/// An [`EventFd`] as a vm-superio interrupt or reset line.
#[derive(Debug)]
pub struct EventTrigger(pub EventFd);

impl Trigger for EventTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

impl EventTrigger {
    /// A new non-blocking event.
    pub fn new() -> std::io::Result<Self> {
        EventFd::new(EFD_NONBLOCK).map(EventTrigger)
    }
}

/// What a port access did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PioEffect {
    /// Nothing further.
    None,
    /// The guest asked for a CPU reset through the i8042.
    Reset,
}

/// COM1 and the i8042 on the port-I/O bus.
pub struct PioBus<W: Write> {
    serial: Serial<EventTrigger, vm_superio::serial::NoEvents, W>,
    i8042: I8042Device<EventTrigger>,
    reset: EventFd,
}

impl<W: Write> std::fmt::Debug for PioBus<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PioBus").finish_non_exhaustive()
    }
}

impl<W: Write> PioBus<W> {
    /// COM1 writing to `console`, raising `serial_irq`.
    pub fn new(console: W, serial_irq: EventTrigger) -> std::io::Result<Self> {
        let reset = EventTrigger::new()?;
        let reset_probe = reset.0.try_clone()?;
        Ok(PioBus {
            serial: Serial::new(serial_irq, console),
            i8042: I8042Device::new(reset),
            reset: reset_probe,
        })
    }

    /// A guest `in` from `port`.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        let value = match port {
            p if (COM1..COM1 + 8).contains(&p) => self.serial.read(offset(p - COM1)),
            p if (I8042..=I8042 + 4).contains(&p) => self.i8042.read(offset(p - I8042)),
            _ => 0xff,
        };
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    /// A guest `out` to `port`.
    pub fn write(&mut self, port: u16, data: &[u8]) -> PioEffect {
        let Some(&value) = data.first() else {
            return PioEffect::None;
        };
        match port {
            p if (COM1..COM1 + 8).contains(&p) => {
                // A console that cannot be written to must not stop the guest.
                let _ = self.serial.write(offset(p - COM1), value);
            }
            p if (I8042..=I8042 + 4).contains(&p) => {
                let _ = self.i8042.write(offset(p - I8042), value);
                if self.reset.read().is_ok() {
                    return PioEffect::Reset;
                }
            }
            _ => {}
        }
        PioEffect::None
    }

    /// Flushes the console.
    pub fn flush(&mut self) {
        let _ = self.serial.writer_mut().flush();
    }
}

fn offset(delta: u16) -> u8 {
    u8::try_from(delta).unwrap_or(u8::MAX)
}
