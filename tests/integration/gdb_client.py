#!/usr/bin/env python3
"""A raw GDB remote protocol client for tests/integration/gdb.sh: what gdb's batch mode cannot
script (Ctrl-C while running, hostile packets, kill). Usage: gdb_client.py PORT SCENARIO."""
import socket, sys, time

def checksum(payload):
    return "%02x" % (sum(payload.encode()) & 0xFF)

class Client:
    def __init__(self, port):
        for _ in range(100):
            try:
                self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("cannot connect")
        self.buf = b""

    def send_raw(self, data):
        self.s.sendall(data)

    def send(self, payload):
        self.send_raw(("$%s#%s" % (payload, checksum(payload))).encode())

    def packet(self):
        """The next packet's payload (acks skipped); we ack it."""
        while True:
            i = self.buf.find(b"$")
            j = self.buf.find(b"#", i + 1) if i >= 0 else -1
            if i >= 0 and j >= 0 and len(self.buf) >= j + 3:
                payload = self.buf[i + 1:j].decode()
                self.buf = self.buf[j + 3:]
                self.send_raw(b"+")
                return payload
            data = self.s.recv(65536)
            if not data:
                raise SystemExit("connection closed")
            self.buf += data

    def cmd(self, payload):
        self.send(payload)
        return self.packet()

def main():
    port, scenario = int(sys.argv[1]), sys.argv[2]
    c = Client(port)
    stop = c.cmd("?")
    assert stop.startswith("T05"), stop
    if scenario == "interrupt":
        c.send("c")
        time.sleep(0.3)
        c.send_raw(b"\x03")
        stop = c.packet()
        assert stop.startswith("T02"), stop
        print("ok - gdb_ctrl_c_stops_a_running_guest")
        c.cmd("D")
    elif scenario == "hostile":
        c.send_raw(b"$g#00")  # bad checksum: NAK, nothing else
        c.send("A" * 100000)  # far past the packet limit, good checksum
        assert c.packet() == "E22"
        c.send_raw(b"\x00\xff}}}\x03++")  # noise (a stray 0x03 while stopped is ignored)
        for bad in ["m", "mzz,1", "m0,", "M0,4:zz", "M0,100000:00", "X0,4:ab", "Z9,0,1",
                    "Z2,1,3", "p999", "P0=12", "Hg99", "Hc-2", "vCont;q", "vCont;s:99",
                    "qXfer:features:read:other.xml:0,10", "qXfer:features:read:target.xml:ffffffff,1",
                    "qThreadExtraInfo,0", "G" + "0" * 7, "T0", "qSupported:" + "x" * 3000]:
            c.cmd(bad)
        stop = c.cmd("?")
        assert stop.startswith("T05"), stop
        regs = c.cmd("g")
        assert len(regs) > 100, regs
        print("ok - gdb_hostile_packets_do_not_hurt")
        c.cmd("D")
    elif scenario == "kill":
        c.send("k")
        time.sleep(0.5)
        print("ok - gdb_kill_sent")

main()
