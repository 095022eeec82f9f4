#!/usr/bin/env python3
"""Independent Modbus peer for the agent's integration tests (pymodbus 3.16).

Serves the EH-203 register layout (profile `ouman_eh203_modbus200`) with fixed,
known values, so the Rust test can check that our client reads and decodes what
a third-party implementation puts on the wire.

    pymodbus_server.py tcp [--trace]        # binds 127.0.0.1:0, prints "READY tcp <port>"
    pymodbus_server.py rtu <tty> [--trace]  # RTU 9600 8N1 units 1 and 2, prints "READY rtu <tty>"
    pymodbus_server.py ascii <tty>          # ASCII 9600 8N1 units 1 and 17, prints "READY ascii <tty>"

tcp and rtu also serve unit 2, a device with every table for the write tests
(see `write_device`); rtu executes broadcasts (unit 0) without replying, as a
real RS-485 line does. With --trace every request PDU received is printed as
"RX dev=<unit> fc=<function code>" (flushed before the reply is sent), so a
test can see which function code reached the peer and how often.

The process runs until killed. Uses the SimData/SimDevice API (stack-notes §3):
with SimData, address=0 is protocol address 0; `slave=` no longer exists.
"""

import asyncio
import sys

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

UNIT_ID = 1
BANK_START = 10

# Holding register -> raw value. Temperatures are i16 hundredths of a degree.
VALUES = {
    18: (-512) & 0xFFFF,  # outdoor_temp            -5.12 degC
    20: 3550,             # l1_supply_temp          35.50 degC
    26: 2800,             # l2_supply_temp          28.00 degC
    33: 5000,             # dhw_tank_top_temp       50.00 degC
    34: 4210,             # dhw_tank_bottom_temp    42.10 degC
    41: 8525,             # hot_gas_temp            85.25 degC
    45: 0b0101,           # status: compressor on, heater off, alarm A on, alarm B off
}


def device() -> SimDevice:
    regs = [VALUES.get(a, 0) for a in range(BANK_START, 60)]
    return SimDevice(UNIT_ID, simdata=[SimData(address=BANK_START, values=regs, datatype=DataType.REGISTERS)])


# Unit 17 (0x11) in ascii mode serves the worked examples of the Modbus
# Application Protocol V1.1b3 §6.1-6.4 in separate coil/input/register blocks.
SPEC_UNIT_ID = 17
SPEC_COILS = (0x13, [True, False, True, True, False, False, True, True,      # CD
                     True, True, False, True, False, True, True, False,      # 6B
                     True, False, True])                                     # 05 (19 coils)
SPEC_DISCRETE = (0xC4, [False, False, True, True, False, True, False, True,  # AC
                        True, True, False, True, True, False, True, True,    # DB
                        True, False, True, False, True, True])               # 35 (22 inputs)
SPEC_HOLDING = (0x6B, [0xAE41, 0x5652, 0x4340])
SPEC_INPUT = (0x08, [0x000A])


def spec_device() -> SimDevice:
    def block(spec, datatype):
        return [SimData(address=spec[0], values=spec[1], datatype=datatype)]

    return SimDevice(
        SPEC_UNIT_ID,
        simdata=(
            block(SPEC_COILS, DataType.BITS),
            block(SPEC_DISCRETE, DataType.BITS),
            block(SPEC_HOLDING, DataType.REGISTERS),
            block(SPEC_INPUT, DataType.REGISTERS),
        ),
    )


# Unit 2: a device with every table, for writes.
WRITE_UNIT_ID = 2
WRITE_COILS = (0, [False] * 16)                 # coils 0..15, writable
WRITE_DISCRETE = (0, [True, False] * 4)         # discrete inputs 0..7
WRITE_HOLDING = (100, [0] * 20)                 # holding 100..119, writable
WRITE_READONLY = (120, [0x1111, 0x2222])        # holding 120..121, read-only
WRITE_INPUT = (0, list(range(10)))              # input registers 0..9


def write_device() -> SimDevice:
    return SimDevice(
        WRITE_UNIT_ID,
        simdata=(
            [SimData(address=WRITE_COILS[0], values=WRITE_COILS[1], datatype=DataType.BITS)],
            [SimData(address=WRITE_DISCRETE[0], values=WRITE_DISCRETE[1], datatype=DataType.BITS)],
            [
                SimData(address=WRITE_HOLDING[0], values=WRITE_HOLDING[1], datatype=DataType.REGISTERS),
                SimData(
                    address=WRITE_READONLY[0],
                    values=WRITE_READONLY[1],
                    datatype=DataType.REGISTERS,
                    readonly=True,
                ),
            ],
            [SimData(address=WRITE_INPUT[0], values=WRITE_INPUT[1], datatype=DataType.REGISTERS)],
        ),
    )


def trace(sending, pdu):
    """Print each received request PDU (trace_pdu hook)."""
    if not sending:
        print(f"RX dev={pdu.dev_id} fc={pdu.function_code}", flush=True)
    return pdu


def absent_units_stay_silent() -> None:
    """Make `ignore_missing_devices=True` work with the SimDevice API.

    pymodbus 3.16's SimCore looks an unknown id up as device 0 and raises
    KeyError, which the request handler turns into exception 04 instead of
    the NoSuchIdException that `ignore_missing_devices` is checked for.
    """
    from pymodbus.exceptions import NoSuchIdException
    from pymodbus.simulator.simcore import SimCore

    def get_device(self, device_id):
        if device_id in self.devices:
            return self.devices[device_id]
        if 0 in self.devices:
            return self.devices[0]
        raise NoSuchIdException(f"no device {device_id}")

    SimCore._SimCore__get_device = get_device


async def main() -> None:
    tracer = trace if "--trace" in sys.argv else None
    if len(sys.argv) >= 2 and sys.argv[1] == "tcp":
        server = ModbusTcpServer([device(), write_device()], address=("127.0.0.1", 0), trace_pdu=tracer)
        await server.serve_forever(background=True)
        port = server.transport.sockets[0].getsockname()[1]
        print(f"READY tcp {port}", flush=True)
    elif len(sys.argv) >= 3 and sys.argv[1] == "rtu":
        absent_units_stay_silent()
        # 8N1: pymodbus cannot set parity on a pty (stack-notes pitfall 12).
        server = ModbusSerialServer(
            [device(), write_device()],
            framer=FramerType.RTU,
            port=sys.argv[2],
            baudrate=9600,
            bytesize=8,
            parity="N",
            stopbits=1,
            # A real RS-485 line: absent units stay silent, and unit 0 is a
            # broadcast every unit executes without replying.
            ignore_missing_devices=True,
            broadcast_enable=True,
            trace_pdu=tracer,
        )
        await server.serve_forever(background=True)
        print(f"READY rtu {sys.argv[2]}", flush=True)
    elif len(sys.argv) >= 3 and sys.argv[1] == "ascii":
        absent_units_stay_silent()
        # 8N1 rather than ASCII's usual 7E1: pymodbus cannot set parity, nor 7
        # data bits, on a pty (stack-notes pitfall 12).
        server = ModbusSerialServer(
            [device(), spec_device()],
            framer=FramerType.ASCII,
            port=sys.argv[2],
            baudrate=9600,
            bytesize=8,
            parity="N",
            stopbits=1,
            # Behave like a real RS-485 line: an absent unit stays silent
            # (pymodbus would otherwise answer for it with exception 04) and
            # unit 0 is a broadcast that every unit executes without replying.
            ignore_missing_devices=True,
            broadcast_enable=True,
        )
        await server.serve_forever(background=True)
        print(f"READY ascii {sys.argv[2]}", flush=True)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    await server.serving


if __name__ == "__main__":
    asyncio.run(main())
