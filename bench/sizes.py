"""The benchmark's lists of sizes, as ``bench/run.py`` checks them and ``bench/conftest.py`` reads them."""


def tokens(text):
    """The comma- or space-separated values of an option; none for '' or 'none'."""
    if text.strip().lower() in ("", "none"):
        return []
    return [token for token in text.replace(" ", ",").split(",") if token]


def parse(text, parts):
    """Each value of ``text`` (``tokens``) as a tuple of ``parts`` positive
    integers joined by "x" ("64x100x256x256"); ValueError otherwise."""
    values = []
    for token in tokens(text):
        numbers = tuple(int(n) for n in token.split("x"))  # ValueError for a part that is not an integer
        if len(numbers) != parts or min(numbers) < 1:
            raise ValueError(token)
        values.append(numbers)
    return values
