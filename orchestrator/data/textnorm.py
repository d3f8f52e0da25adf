"""The one text normaliser, applied to references and hypotheses alike (torch-free).

Lower-case, punctuation removed (apostrophes too: "don't" -> "dont"), every whitespace
character (tab, newline, no-break space, ...) turned into a space, runs of spaces collapsed,
ends stripped. jiwer splits words on " " only, so after this its tokens are exactly
`text.split()`, and the per-utterance word counts (jiwer's tokens) add up to its WER.
"""
import re

import jiwer

_WHITESPACE = re.compile(r"\s+")  # str's own notion of whitespace: what str.split() splits on


class _SpacesOnly(jiwer.AbstractTransform):
    """Every run of whitespace characters (Unicode's, as str.split sees them) -> one space."""

    def process_string(self, s: str) -> str:
        return _WHITESPACE.sub(" ", s)


normalize = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), _SpacesOnly(),
                           jiwer.RemoveMultipleSpaces(), jiwer.Strip()])

