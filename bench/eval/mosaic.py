"""Image grids with text: the composition behind the traversal, reconstruction and sample figures.

Everything here works on arrays of pixel values and returns Pillow images; nothing decodes,
trains or reads files. Tiles are pasted without resampling, so the pixels of every image shown
can be read back from the PNG at the place :func:`cell_origin` gives. The geometry is fixed in
pixels (no text-dependent sizes inside a panel), so a figure's size follows from its grid alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE = 64  # smaller images are upscaled by a whole factor to at least this height (MNIST's 32 px by 2)
GAP = 2  # white pixels between neighbouring tiles
LABEL_WIDTH = 160  # the column of row labels, wide enough for "z19  0.000 nats, inactive"
LINE = 20  # height of one line of text: column labels and titles
MARGIN = 8  # white border around a figure
SPACING = 24  # white between panels set side by side
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
GREY = (150, 150, 150)
FONT = ImageFont.load_default(size=13)


def to_tiles(means: np.ndarray) -> np.ndarray:
    """Pixel intensities in [0, 1] as RGB tiles of 8-bit values, upscaled to at least :data:`TILE` pixels.

    Parameters
    ----------
    means : numpy.ndarray
        Shape ``(..., C, H, W)`` with C 1 (grey) or 3 (RGB), values in [0, 1].

    Returns
    -------
    numpy.ndarray
        uint8, shape ``(..., s*H, s*W, 3)`` with ``s = max(1, TILE // H)``; each value is
        ``round(255 * mean)`` repeated over an s x s block (nearest neighbour).
    """
    pixels = np.rint(np.clip(means, 0.0, 1.0) * 255.0).astype(np.uint8)
    pixels = np.moveaxis(pixels, -3, -1)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    scale = max(1, TILE // pixels.shape[-3])
    return pixels.repeat(scale, axis=-3).repeat(scale, axis=-2)


def cell_origin(row: int, column: int, tile_height: int, tile_width: int, row_labels: bool,
                column_labels: bool) -> tuple[int, int]:
    """Pixel (x, y) of the top-left corner of a tile inside a panel made by :func:`grid_panel`."""
    x = (LABEL_WIDTH if row_labels else 0) + column * (tile_width + GAP)
    y = (LINE if column_labels else 0) + row * (tile_height + GAP)
    return x, y


def grid_panel(tiles: np.ndarray, row_labels: Sequence[str] | None = None, column_labels: Sequence[str] | None = None,
               greyed: Sequence[bool] = ()) -> Image.Image:
    """Tiles in rows and columns, with an optional label left of each row and above each column.

    Parameters
    ----------
    tiles : numpy.ndarray
        uint8, shape ``(R, K, h, w, 3)``: row r, column k.
    row_labels : sequence of str, optional
        One per row, drawn in a column :data:`LABEL_WIDTH` pixels wide.
    column_labels : sequence of str, optional
        One per column, centred above it in a line :data:`LINE` pixels high.
    greyed : sequence of bool
        Rows whose label is drawn in grey rather than black.

    Returns
    -------
    PIL.Image.Image
        RGB, ``LABEL_WIDTH * [row labels] + K*w + (K-1)*GAP`` wide and
        ``LINE * [column labels] + R*h + (R-1)*GAP`` high.
    """
    rows, columns, height, width = tiles.shape[:4]
    left, top = cell_origin(0, 0, height, width, row_labels is not None, column_labels is not None)
    canvas = Image.new("RGB", (left + columns * width + (columns - 1) * GAP, top + rows * height + (rows - 1) * GAP),
                       BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r in range(rows):
        for k in range(columns):
            x, y = cell_origin(r, k, height, width, row_labels is not None, column_labels is not None)
            canvas.paste(Image.fromarray(np.ascontiguousarray(tiles[r, k])), (x, y))
        if row_labels is not None:
            colour = GREY if r < len(greyed) and greyed[r] else INK
            draw.text((0, top + r * (height + GAP) + height // 2), row_labels[r], fill=colour, font=FONT, anchor="lm")
    for k, text in enumerate(column_labels or ()):
        draw.text((left + k * (width + GAP) + width // 2, LINE // 2), text, fill=INK, font=FONT, anchor="mm")
    return canvas


def titled(panels: Sequence[Image.Image], titles: Sequence[str]) -> Image.Image:
    """Panels side by side, each under its title, inside a white margin.

    Parameters
    ----------
    panels : sequence of PIL.Image.Image
        Aligned at the top; a shorter panel leaves white below it.
    titles : sequence of str
        One per panel, left-aligned above it.

    Returns
    -------
    PIL.Image.Image
        ``2*MARGIN + sum(widths) + (n-1)*SPACING`` wide, where each width is the larger of the
        panel's and its title's, and ``2*MARGIN + LINE + max(heights)`` high.
    """
    widths = [max(panel.width, int(np.ceil(FONT.getlength(title)))) for panel, title in zip(panels, titles)]
    canvas = Image.new("RGB", (2 * MARGIN + sum(widths) + (len(panels) - 1) * SPACING,
                               2 * MARGIN + LINE + max(panel.height for panel in panels)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = MARGIN
    for panel, title, width in zip(panels, titles, widths):
        draw.text((x, MARGIN + LINE // 2), title, fill=INK, font=FONT, anchor="lm")
        canvas.paste(panel, (x, MARGIN + LINE))
        x += width + SPACING
    return canvas
