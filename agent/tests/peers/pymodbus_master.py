#!/usr/bin/env python3
"""Independent Modbus *master* for the agent's slave-mode tests (pymodbus 3.16).

    pymodbus_master.py rtu <tty>      # RTU 9600 8N1
    pymodbus_master.py ascii <tty>    # ASCII 9600 8N1

Prints "READY <framer> <tty>", then reads one JSON command per line on stdin
and answers each with one JSON line on stdout, so the Rust test can interleave
the master's requests with its own checks:

    {"op": "read", "table": "holding|input|coil|discrete", "addr": 0, "count": 2, "unit": 10}
        -> {"registers": [...]} or {"bits": [...]}
    {"op": "write_register", "addr": 0, "value": 215, "unit": 10}       (FC06)
    {"op": "write_registers", "addr": 0, "values": [1, 2], "unit": 10}  (FC10)
    {"op": "write_coil", "addr": 0, "value": true, "unit": 10}          (FC05)
    {"op": "write_coils", "addr": 0, "values": [true], "unit": 10}      (FC0F)
        -> {"ok": true}
    any of these can answer {"exception": <code>} or {"no_answer": "<why>"}
    {"op": "raw", "hex": "00060001000399DA", "wait": 0.5}
        -> {"rx": "<hex of every byte received within wait seconds>"}

pymodbus runs with retries=0 and a 1 s timeout, so a request nobody answers
comes back as no_answer. The line is 8N1: pymodbus cannot set parity (or 7
data bits) on a pty (stack-notes pitfall 12).
"""

import json
import sys
import time

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse


def answer(rr, count=None, bits=False, registers=False):
    if isinstance(rr, ExceptionResponse) or rr.isError():
        code = getattr(rr, "exception_code", None)
        if code is None:
            return {"no_answer": str(rr)}
        return {"exception": code}
    if bits:
        return {"bits": [bool(b) for b in rr.bits[:count]]}
    if registers:
        return {"registers": list(rr.registers)}
    return {"ok": True}


def run(client, cmd):
    op = cmd["op"]
    unit = cmd.get("unit", 1)
    if op == "read":
        table, addr, count = cmd["table"], cmd["addr"], cmd["count"]
        fn = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[table]
        rr = fn(addr, count=count, device_id=unit)
        is_bits = table in ("coil", "discrete")
        return answer(rr, count, bits=is_bits, registers=not is_bits)
    if op == "write_register":
        return answer(client.write_register(cmd["addr"], cmd["value"], device_id=unit))
    if op == "write_registers":
        return answer(client.write_registers(cmd["addr"], cmd["values"], device_id=unit))
    if op == "write_coil":
        return answer(client.write_coil(cmd["addr"], cmd["value"], device_id=unit))
    if op == "write_coils":
        return answer(client.write_coils(cmd["addr"], cmd["values"], device_id=unit))
    if op == "raw":
        port = client.socket
        port.reset_input_buffer()
        port.write(bytes.fromhex(cmd["hex"]))
        port.flush()
        deadline = time.monotonic() + cmd.get("wait", 0.5)
        rx = b""
        while time.monotonic() < deadline:
            port.timeout = max(0.0, deadline - time.monotonic())
            rx += port.read(256)
        return {"rx": rx.hex()}
    return {"error": f"unknown op {op}"}


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("rtu", "ascii"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    framer = FramerType.RTU if sys.argv[1] == "rtu" else FramerType.ASCII
    client = ModbusSerialClient(
        sys.argv[2], framer=framer, baudrate=9600, bytesize=8, parity="N", stopbits=1, timeout=1, retries=0
    )
    if not client.connect():
        print(f"cannot open {sys.argv[2]}", file=sys.stderr)
        sys.exit(1)
    print(f"READY {sys.argv[1]} {sys.argv[2]}", flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            reply = run(client, json.loads(line))
        except ModbusException as e:
            reply = {"no_answer": str(e)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
