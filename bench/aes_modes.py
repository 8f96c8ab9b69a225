"""CPU per MiB of AES-256-CTR (the store's SSE-S3 cipher) beside AES-256-GCM, with the project's cryptography.

    .venv/bin/python -m bench.aes_modes [--rounds 5]

Each figure is the best of `rounds` runs of 200 MiB pieces, process CPU time (not wall time, which
the machine's load inflates): a fresh output per piece (`update`, as the store decrypts today), and
into one reused buffer (`update_into`), for CTR and GCM alike (GCM with its tag, as a format would).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MIB = 1024 * 1024
PIECES = 200


def per_mib(work: Callable[[], object], rounds: int) -> float:
    """Milliseconds of process CPU per MiB piece, the best of `rounds`."""
    work()
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(PIECES):
            work()
        best = min(best, (time.process_time() - start) / PIECES)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    key, piece, out = os.urandom(32), os.urandom(MIB), bytearray(MIB + 16)
    aes = algorithms.AES(key)
    ctr = Cipher(aes, modes.CTR(os.urandom(16))).decryptor()

    def gcm(into: bool) -> Callable[[], object]:
        def run() -> object:
            context = Cipher(aes, modes.GCM(os.urandom(12))).encryptor()
            done = context.update_into(piece, out) if into else context.update(piece)
            context.finalize()
            return done

        return run

    figures = {
        "AES-256-CTR update": per_mib(lambda: ctr.update(piece), rounds),
        "AES-256-CTR update_into": per_mib(lambda: ctr.update_into(piece, out), rounds),
        "AES-256-GCM update + tag": per_mib(gcm(False), rounds),
        "AES-256-GCM update_into + tag": per_mib(gcm(True), rounds),
    }
    print(f"{backend.openssl_version_text()}; load average {os.getloadavg()[0]:.1f}\n")
    print("| Cipher | ms of CPU per MiB | against CTR update |\n|---|---:|---:|")
    base = figures["AES-256-CTR update"]
    for name, ms in figures.items():
        print(f"| {name} | {ms:.3f} | {ms / base:.2f} x |")


if __name__ == "__main__":
    main()
