#!/usr/bin/env python3
"""Independent Modbus peer for the agent's integration tests (pymodbus 3.16).

Serves the EH-203 register layout (profile `ouman_eh203_modbus200`) with fixed,
known values, so the Rust test can check that our client reads and decodes what
a third-party implementation puts on the wire.

    pymodbus_server.py tcp            # binds 127.0.0.1:0, prints "READY tcp <port>"
    pymodbus_server.py rtu <tty>      # RTU 9600 8N1 unit 1, prints "READY rtu <tty>"

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


async def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "tcp":
        server = ModbusTcpServer(device(), address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        port = server.transport.sockets[0].getsockname()[1]
        print(f"READY tcp {port}", flush=True)
    elif len(sys.argv) >= 3 and sys.argv[1] == "rtu":
        # 8N1: pymodbus cannot set parity on a pty (stack-notes pitfall 12).
        server = ModbusSerialServer(
            device(), framer=FramerType.RTU, port=sys.argv[2], baudrate=9600, bytesize=8, parity="N", stopbits=1
        )
        await server.serve_forever(background=True)
        print(f"READY rtu {sys.argv[2]}", flush=True)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    await server.serving


if __name__ == "__main__":
    asyncio.run(main())
