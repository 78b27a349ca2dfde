"""CSV exports that a spreadsheet opens safely: the Intervention Log's and the Live Feed's."""


def csv_cell(value) -> str:
    """Neutralise spreadsheet formulas: notes and names are user (or LLM) text."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class CsvBuffer:
    """A file-like sink for csv.writer that hands back what was written since the last take,
    so a StreamingHttpResponse can yield the CSV a row at a time."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def take(self) -> str:
        text, self._parts = "".join(self._parts), []
        return text
