"""The one text normaliser, applied to references and hypotheses alike (torch-free).

Lower-case, punctuation removed (apostrophes too: "don't" -> "dont"), runs of whitespace
collapsed, ends stripped.
"""
import jiwer

normalize = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                           jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
