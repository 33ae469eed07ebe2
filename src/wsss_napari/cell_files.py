"""The files of per-cell labels: ``cells.csv`` rows and ``cells.geojson`` QuPath detections,
streamed one tile's cells at a time (:func:`wsss_napari.cells.slide_cells` writes them
atomically)."""

from __future__ import annotations

import csv
import json
from typing import IO, TYPE_CHECKING, Any

from .classes import PALETTE

if TYPE_CHECKING:
    from .cells import CellTable

#: CSV columns before the per-class mean CAM columns.
CSV_COLUMNS = ("cell_id", "centroid_x_px", "centroid_y_px", "centroid_x_um", "centroid_y_um",
               "area_px", "area_um2", "class", "confidence")


class CellWriter:
    """Writes cells to an open CSV and GeoJSON file as they arrive (:meth:`add`), numbering
    them from 1 and counting them per class; :meth:`close` ends the GeoJSON."""

    def __init__(self, csv_file: IO[str], geojson_file: IO[str], names: tuple[str, ...],
                 mpp: float | None) -> None:
        self.names, self.mpp = names, mpp
        self.n = 0
        self.counts = dict.fromkeys(names, 0)
        self._csv = csv.writer(csv_file)
        self._csv.writerow([*CSV_COLUMNS, *(f"cam_{n}" for n in names)])
        self._geojson = geojson_file
        self._geojson.write('{"type": "FeatureCollection", "features": [\n')

    def add(self, table: CellTable) -> None:
        for k in range(len(table)):
            self.n += 1
            self.counts[self.names[table.label[k]]] += 1
            self._csv.writerow(_csv_row(self.n, table, k, self.names, self.mpp))
            self._geojson.write(("" if self.n == 1 else ",\n")
                                + json.dumps(_feature(self.n, table, k, self.names)))

    def close(self) -> None:
        self._geojson.write("\n]}\n")


def _csv_row(cid: int, table: CellTable, k: int, names: tuple[str, ...],
             mpp: float | None) -> list:
    """Cell ``k`` of ``table`` as a ``cells.csv`` row (:data:`CSV_COLUMNS`, then its mean CAM
    per class); the micrometre columns are empty without an mpp."""
    cyk, cxk = float(table.centroid_y[k]), float(table.centroid_x[k])
    um = (f"{cxk * mpp:.3f}", f"{cyk * mpp:.3f}",
          f"{table.area[k] * mpp * mpp:.3f}") if mpp else ("", "", "")
    return [cid, f"{cxk:.2f}", f"{cyk:.2f}", um[0], um[1], int(table.area[k]), um[2],
            names[table.label[k]], f"{table.confidence[k]:.4f}",
            *(f"{v:.4f}" for v in table.mean_cam[k])]


def _feature(cid: int, table: CellTable, k: int, names: tuple[str, ...]) -> dict[str, Any]:
    """Cell ``k`` of ``table`` as a QuPath detection (GeoJSON Feature: outline, class and
    colour, confidence, area and mean CAMs as measurements)."""
    coords = [[round(float(x), 2), round(float(y), 2)] for x, y in table.outlines[k]]
    coords.append(coords[0])
    label = int(table.label[k])
    color = list(PALETTE[label]) if label < len(PALETTE) else [128, 128, 128]
    return {
        "type": "Feature", "id": cid,
        "geometry": {"type": "Polygon", "coordinates": [coords]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": names[label], "color": color},
            "measurements": {"confidence": round(float(table.confidence[k]), 4),
                             "area_px": int(table.area[k]),
                             **{f"cam_{n}": round(float(v), 4)
                                for n, v in zip(names, table.mean_cam[k], strict=True)}},
        },
    }
