#!/usr/bin/env python3
"""Seed inputs for the fuzz targets, made from pulmo's own phantom slice.

usage: make_seeds.py OUTDIR   (run with the repository's venv: pydicom, numpy)

Writes OUTDIR/dicom/ (for `part10` and `decode`): a 32 x 32 crop of
sample-dicom/phantom-4242/CT0001.dcm in every transfer syntax pulmo decodes and every file
layout it reads, re-encoded by dcmtk (dcmconv, dcmcrle, dcmcjpeg, dcmcjpls), GDCM
(gdcmconv, JPEG 2000) and OpenJPH (ojph_compress, HTJ2K), from the Debian packages and the
venv that scripts/setup/setup.sh --test installs; a tool that is missing is skipped. And
OUTDIR/stow/ (for `stow`): STOW-RS requests, a Content-Type line and then the body. And
OUTDIR/dimse/ (for `dimse`): what dcmtk's echoscu and storescu send in whole associations
(A-ASSOCIATE-RQ, P-DATA with C-ECHO or C-STORE of the crops, A-RELEASE-RQ), recorded by a
proxy in front of dcmtk's storescp, which answers them.
Small on purpose: the fuzzer mutates every byte, and libFuzzer runs with -max_len=65536.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLICE = os.path.join(ROOT, "sample-dicom", "phantom-4242", "CT0001.dcm")


def run(*args):
    if shutil.which(args[0]) is None:
        print(f"skipped (no {args[0]}): {' '.join(args)}", file=sys.stderr)
        return False
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return True


def crop(frames=1, bits=16):
    ds = pydicom.dcmread(SLICE)
    pixels = ds.pixel_array[112:144, 112:144].astype(np.uint16)
    if bits == 8:
        pixels = (pixels >> 4).astype(np.uint8)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    stack = np.stack([pixels + i for i in range(frames)]) if frames > 1 else pixels
    ds.Rows, ds.Columns = pixels.shape
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = stack.tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_original_encoding(False, True)
    return ds


def dicom_seeds(out):
    base = os.path.join(out, "explicit_le.dcm")
    crop().save_as(base, enforce_file_format=True)
    crop(bits=8).save_as(os.path.join(out, "explicit_le_8bit.dcm"), enforce_file_format=True)
    crop(frames=2).save_as(os.path.join(out, "explicit_le_2frames.dcm"), enforce_file_format=True)
    # pydicom's default layout: a meta group without its group length, no preamble.
    crop().save_as(os.path.join(out, "pydicom_no_group_length.dcm"))
    o = lambda name: os.path.join(out, name)
    run("dcmconv", "+ti", base, o("implicit_le.dcm"))
    run("dcmconv", "+tb", base, o("explicit_be.dcm"))
    run("dcmconv", "+td", base, o("deflated.dcm"))
    run("dcmconv", "-F", "+ti", base, o("bare_implicit.dcm"))
    run("dcmconv", "-F", "+te", base, o("bare_explicit.dcm"))
    run("dcmconv", "-F", "+tb", base, o("bare_big_endian.dcm"))
    run("dcmcrle", base, o("rle.dcm"))
    run("dcmcrle", o("explicit_le_2frames.dcm"), o("rle_2frames.dcm"))
    run("dcmcjpeg", "+e1", base, o("jpeg_lossless_sv1.dcm"))
    run("dcmcjpeg", "+el", "+sv", "7", base, o("jpeg_lossless_sv7.dcm"))
    run("dcmcjpeg", "+ee", base, o("jpeg_extended_12bit.dcm"))
    run("dcmcjpeg", "+eb", o("explicit_le_8bit.dcm"), o("jpeg_baseline_8bit.dcm"))
    run("dcmcjpls", "+el", base, o("jpegls_lossless.dcm"))
    run("dcmcjpls", "+en", base, o("jpegls_near.dcm"))
    run("gdcmconv", "--j2k", base, o("j2k_lossless.dcm"))
    run("gdcmconv", "--j2k", "--irreversible", "--lossy", "-q", "30", base, o("j2k_lossy.dcm"))
    htj2k(base, out)


def htj2k(base, out):
    """HTJ2K lossless and lossy, one fragment each (as scripts/testdata/make_htj2k.py)."""
    if shutil.which("ojph_compress") is None:
        print("skipped (no ojph_compress): HTJ2K", file=sys.stderr)
        return
    ds = pydicom.dcmread(base)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "in.rawl")
        ds.pixel_array.astype("<u2").tofile(raw)
        for name, uid, extra in (("htj2k_lossless.dcm", "1.2.840.10008.1.2.4.201", ["-reversible", "true"]),
                                 ("htj2k_lossy.dcm", "1.2.840.10008.1.2.4.203", ["-qstep", "0.01"])):
            j2c = os.path.join(tmp, "out.j2c")
            run("ojph_compress", "-i", raw, "-o", j2c, "-dims", "{32,32}", "-num_comps", "1",
                "-signed", "false", "-bit_depth", str(ds.BitsStored), "-downsamp", "{1,1}", *extra)
            copy = pydicom.dcmread(base)
            copy.PixelData = encapsulate([open(j2c, "rb").read()])
            copy["PixelData"].VR = "OB"
            copy.file_meta.TransferSyntaxUID = uid
            copy.set_original_encoding(False, True)
            copy.save_as(os.path.join(out, name), enforce_file_format=True)


def stow_seeds(out):
    dicom = open(os.path.join(out, "..", "dicom", "explicit_le.dcm"), "rb").read()[:600]
    typed = 'multipart/related; type="application/dicom"; boundary='

    def part(boundary, headers, body):
        return b"--" + boundary + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body + b"\r\n"

    def request(name, content_type, boundary, parts, preamble=b"", epilogue=b""):
        body = preamble + b"".join(part(boundary, h, b) for h, b in parts) + b"--" + boundary + b"--\r\n" + epilogue
        with open(os.path.join(out, name), "wb") as f:
            f.write(content_type.encode() + b"\n" + body)

    dcm = [b"Content-Type: application/dicom"]
    request("one_part", typed + "abc", b"abc", [(dcm, dicom)])
    request("two_parts_quoted", typed + '"a b:c"', b"a b:c", [(dcm, dicom), (dcm, b"DICM")])
    request("other_part", typed + "xyz", b"xyz",
            [([b"Content-Type: text/plain; charset=utf-8"], b"hello"), ([b"Content-ID: <1>"], b"none"), (dcm, dicom)])
    request("untyped_with_preamble", "multipart/related; boundary=BOUNDARY", b"BOUNDARY",
            [(dcm + [b"Content-Length: 600", b"Content-Location: /x"], dicom)],
            preamble=b"preamble text\r\n", epilogue=b"epilogue")
    request("big_part", typed + "q", b"q", [(dcm, dicom * 8)])
    with open(os.path.join(out, "cut_short"), "wb") as f:
        f.write((typed + "abc\n").encode() + part(b"abc", dcm, dicom)[:300])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record_association(scp_port, tool, flags, files, path):
    """Runs one dcmtk SCU through a proxy to storescp on `scp_port` and writes what the SCU sent."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    sent = bytearray()

    def pump(src, dst, keep):
        while chunk := src.recv(65536):
            if keep:
                sent.extend(chunk)
            dst.sendall(chunk)
        dst.shutdown(socket.SHUT_WR)

    def proxy():
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", scp_port))
        back = threading.Thread(target=pump, args=(server, client, False))
        back.start()
        try:
            pump(client, server, True)
        except OSError:
            pass
        back.join(10)

    thread = threading.Thread(target=proxy)
    thread.start()
    port = listener.getsockname()[1]
    subprocess.run([tool, "-aec", "PULMO", *flags, "127.0.0.1", str(port), *files],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    thread.join(30)
    listener.close()
    with open(path, "wb") as f:
        f.write(bytes(sent))


def dimse_seeds(out):
    dicom = os.path.join(out, "..", "dicom")
    if shutil.which("storescp") is None or shutil.which("storescu") is None:
        print("skipped (no dcmtk): dimse seeds", file=sys.stderr)
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as received:
        scp = subprocess.Popen(["storescp", "-aet", "PULMO", "-od", received, "+xa", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            record_association(port, "echoscu", [], [], os.path.join(out, "echo"))
            # storescu proposes every storage class it knows (a 10 KB A-ASSOCIATE-RQ) unless
            # -R: once that way, then only the file's own class.
            for name, flags in [("explicit_le.dcm", []), ("implicit_le.dcm", ["-R", "-xi"]),
                                ("jpeg_lossless_sv1.dcm", ["-R", "-xs"]), ("jpegls_lossless.dcm", ["-R", "-xt"]),
                                ("j2k_lossless.dcm", ["-R", "-xv"]), ("rle.dcm", ["-R", "-xr"]),
                                ("deflated.dcm", ["-R", "-xd"])]:
                path = os.path.join(dicom, name)
                if os.path.exists(path):
                    stem = os.path.splitext(name)[0]
                    record_association(port, "storescu", flags, [path], os.path.join(out, f"store_{stem}"))
        finally:
            scp.terminate()
            scp.wait()


def main():
    out = sys.argv[1]
    for sub in ("dicom", "stow", "dimse"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    dicom_seeds(os.path.join(out, "dicom"))
    stow_seeds(os.path.join(out, "stow"))
    dimse_seeds(os.path.join(out, "dimse"))


if __name__ == "__main__":
    main()
