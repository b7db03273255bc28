import json
import math
import re

import six

from cortex_internal.lib.log import logger as log

WORD = re.compile(r"[a-z']+")
NEGATIONS = {"not", "no", "never", "isn't", "wasn't", "don't", "doesn't", "didn't", "can't", "won't"}


class Handler:
    def __init__(self, config):
        # Every project file is in the working directory: the lexicon is read by its relative path.
        with open(config.get("lexicon", "lexicon.json")) as lexicon_file:
            self.lexicon = json.load(lexicon_file)
        self.threshold = float(config.get("threshold", 0.05))
        log.info("lexicon loaded", extra={"words": len(self.lexicon)})

    def handle_async(self, payload):
        text = payload["text"] if isinstance(payload, dict) else payload
        words = WORD.findall(six.ensure_text(text).lower())

        scores = {}
        total = 0.0
        for i, word in enumerate(words):
            if word not in self.lexicon:
                continue
            score = self.lexicon[word]
            if i > 0 and words[i - 1] in NEGATIONS:
                score = -score
            scores[word] = score
            total += score

        # Squash the sum into [-1, 1], as VADER does.
        compound = total / math.sqrt(total * total + 15)
        if compound > self.threshold:
            label = "positive"
        elif compound < -self.threshold:
            label = "negative"
        else:
            label = "neutral"
        log.info("scored", extra={"label": label, "compound": compound})
        return {"label": label, "score": round(compound, 4), "words": scores}
