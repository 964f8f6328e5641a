"""`DataReport`: counts of the samples and boxes a reader skipped or repaired."""

import collections

# Reasons, shared by all readers so that summaries and tests use one wording.
# Whole images that are skipped:
MISSING_IMAGE = "missing image file"
EMPTY_IMAGE = "empty (0-byte) image file"
UNREADABLE_IMAGE = "unreadable or corrupt image"
TRUNCATED_IMAGE = "truncated image"
TINY_IMAGE = "image smaller than 10 px"
UNDECODABLE_IN_PIPELINE = "image that failed to decode in the pipeline"
BAD_IMAGE_ENTRY = "image entry without a usable id"
BAD_FILE_NAME = "image entry whose file_name is not a string"
PATH_OUTSIDE_ROOT = "image path outside the image folder"
BAD_IMAGE_SIZE = "image entry whose width/height is not a positive number"
# Single objects that are dropped:
BAD_LABEL_LINE = "label line without 5 numbers"
CLASS_OUT_OF_RANGE = "class id outside [0, num_classes)"
CLASS_ID_OVER_CAP = "class id too large to infer a class count from"
EMPTY_BOX = "box with non-positive size"
BAD_ANNOTATION = "annotation without a valid bbox"
UNKNOWN_CATEGORY = "annotation of an unknown category"
UNKNOWN_IMAGE = "annotation of an unknown image"
DUPLICATE_LABEL = "duplicate label line"
# Repairs:
BOX_CLIPPED = "box clipped to the image"
CONVERTED_TO_RGB = "image converted to RGB"
REENCODED = "image re-encoded as PNG"
SIZE_MISMATCH = "annotated size differs from the file (boxes rescaled)"
# Kept as they are, but counted:
MISSING_LABEL_FILE = "missing label file (image used without objects)"
CROWD_EXCLUDED = "crowd annotation excluded"


class DataReport:
    """Tally of bad data found while indexing a dataset.

    Readers never let a bad sample reach training: they either repair it
    (clip a box, convert to RGB) or skip it, and record which here. The
    summary is printed before training starts so that a broken dataset is
    noticed early, with the first few offending file names to look at.

    Args:
        name: the dataset's name in messages (usually its file or folder).
        max_examples: how many example file names to keep per reason.
    """

    def __init__(self, name, max_examples=5):
        self.name = str(name)
        self.max_examples = max_examples
        self.skipped = collections.Counter()
        self.repaired = collections.Counter()
        self.noted = collections.Counter()
        self.examples = collections.defaultdict(list)
        self.num_indexed = 0
        self.num_usable = 0

    def skip(self, reason, file_name, count=1):
        """Records that `count` items of `file_name` were dropped for `reason`."""
        self.skipped[reason] += count
        self._remember(reason, file_name)

    def repair(self, reason, file_name, count=1):
        """Records that `count` items of `file_name` were fixed for `reason`."""
        self.repaired[reason] += count
        self._remember(reason, file_name)

    def note(self, reason, file_name, count=1):
        """Records something kept as is but worth knowing (e.g. no label file)."""
        self.noted[reason] += count
        self._remember(reason, file_name)

    def _remember(self, reason, file_name):
        examples = self.examples[reason]
        if len(examples) < self.max_examples and file_name not in examples:
            examples.append(str(file_name))

    @property
    def num_dropped(self):
        """Images indexed but not usable (skipped at index time or in the pipeline)."""
        return self.num_indexed - self.num_usable

    @property
    def clean(self):
        """True when nothing was skipped, repaired or noted."""
        return not (self.skipped or self.repaired or self.noted)

    def summary(self):
        """Returns a multi-line, human-readable summary."""
        lines = [f"{self.name}: {self.num_usable} of {self.num_indexed} images usable."]
        sections = (
            ("skipped", self.skipped),
            ("repaired", self.repaired),
            ("noted", self.noted),
        )
        for title, counter in sections:
            for reason, count in sorted(counter.items()):
                examples = ", ".join(self.examples[reason])
                lines.append(f"  {title} {count} x {reason} (e.g. {examples})")
        return "\n".join(lines)

    def as_dict(self):
        """Returns the counts as plain dicts (for logs and tests)."""
        return {
            "indexed": self.num_indexed,
            "usable": self.num_usable,
            "skipped": dict(self.skipped),
            "repaired": dict(self.repaired),
            "noted": dict(self.noted),
        }

    def __repr__(self):
        return f"DataReport({self.as_dict()})"


def evaluation_coverage(source, images_evaluated):
    """How many of a split's images an evaluation ran on, warning when not all.

    Images can go missing between the annotation file and the metric: skipped
    at index time (missing, corrupt, bad entry) or failing to decode in the
    pipeline. A score on a subset must say so, so the result carries both
    numbers and a warning is printed with the report of what was dropped.

    Args:
        source: the evaluated `DetectionSource` (its `report` counts drops).
        images_evaluated: images the detector was actually scored on.

    Returns:
        dict with "images_evaluated" and "images_in_split" (ints).
    """
    report = getattr(source, "report", None)
    in_split = max(
        int(getattr(report, "num_indexed", 0) or 0),
        int(getattr(source, "num_samples", 0) or 0),
    )
    images_evaluated = int(images_evaluated)
    if images_evaluated < in_split:
        name = report.name if report is not None else repr(source)
        print(
            f"WARNING: evaluated on {images_evaluated} of the {in_split} images of "
            f"{name}; {in_split - images_evaluated} were dropped, so the metrics "
            "describe a subset." + (f"\n{report.summary()}" if report is not None else "")
        )
    return {"images_evaluated": images_evaluated, "images_in_split": in_split}
