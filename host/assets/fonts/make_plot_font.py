"""Builds `R1PlotSans.ttf`, the font the run plots (host/src/plot.rs) draw their text with.

It is DejaVu Sans cut down to the characters a plot label uses (ASCII, Latin-1 and a few
symbols such as ± − σ …) so the binary stays small and needs no system fonts. The Bitstream
Vera licence (LICENSE-DejaVu.txt) allows modified copies only under a name without
"Bitstream" or "Vera", hence the new family name; the copyright and licence name records
are kept as the licence requires.

    pip install fonttools
    python make_plot_font.py /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
"""

import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

FAMILY = "R1 Plot Sans"
POSTSCRIPT = "R1PlotSans"
# Printable ASCII, Latin-1 supplement, σ, en/em dash, ellipsis, minus sign, ≤ ≥.
UNICODES = (
    list(range(0x20, 0x7F))
    + list(range(0xA0, 0x100))
    + [0x03C3, 0x2013, 0x2014, 0x2026, 0x2212, 0x2264, 0x2265]
)


def main(src: str) -> None:
    out = Path(__file__).with_name("R1PlotSans.ttf")
    options = subset.Options()
    options.hinting = False  # plots are anti-aliased; hinting bytecode is most of the file
    options.layout_features = ["kern"]
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]
    options.notdef_outline = True
    options.drop_tables += ["MATH", "FFTM"]
    font = TTFont(src, recalcTimestamp=False)  # byte-identical output on every run
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=UNICODES)
    subsetter.subset(font)
    names = font["name"]
    for record in names.names:
        if record.nameID in (1, 16):
            record.string = FAMILY
        elif record.nameID == 3:
            record.string = f"{POSTSCRIPT}: subset of DejaVu Sans"
        elif record.nameID == 4:
            record.string = FAMILY
        elif record.nameID == 6:
            record.string = POSTSCRIPT
    # The licences forbid these words in the name of a modified font (the copyright and
    # licence records, 0, 13 and 14, must keep them).
    reserved = ("Bitstream", "Vera", "Arev", "Tavmjong")
    for record in names.names:
        text = record.toUnicode()
        if record.nameID not in (0, 13, 14) and any(word in text for word in reserved):
            raise SystemExit(f"name record {record.nameID} still says {text!r}")
    font.save(out)
    print(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
