"""What travels with a model's weights so that loading them into the wrong model is refused:
the normalization flags and a fingerprint of the dictionaries (torch's `_extra_state`)."""

import hashlib
import os

EXTRA_STATE = "_extra_state"  # torch's key for get_extra_state()
DICTIONARIES = "dictionaries"  # the key of the dictionaries' fingerprint in the extra state


def dictionary_fingerprint(task) -> dict:
    """The data directory and, per side, the size and sha256 of the symbols of the task's
    dictionaries: enough to tell whether a checkpoint's embeddings fit another data directory."""
    sides = {"source": getattr(task, "source_dictionary", None), "target": getattr(task, "target_dictionary", None)}
    fingerprint = {side: {"symbols": len(d), "sha256": hashlib.sha256("\n".join(d.symbols).encode()).hexdigest()}
                   for side, d in sides.items() if d is not None}
    return {"data": absolute_data_path(getattr(getattr(task, "cfg", None), "data", "")), **fingerprint}


def absolute_data_path(data) -> str:
    """fairseq's --data (colon-separated shards) with each local path made absolute."""
    data = str(data)
    return data if "://" in data else os.pathsep.join(os.path.abspath(path) for path in data.split(os.pathsep))


def check_dictionary_fingerprints(trained, now) -> None:
    """Raise ValueError if the dictionaries fingerprinted in `trained` (from a checkpoint) are not
    the ones in `now` (the data directory of this run), naming each side that differs."""
    differences = [describe_difference(side, trained[side], now[side])
                   for side in ("source", "target") if side in trained and side in now and trained[side] != now[side]]
    if differences:
        raise ValueError(f"the dictionaries of data directory {now['data']} are not the ones this checkpoint was "
                         f"trained with: {'; '.join(differences)}. Use the data directory the model was trained on "
                         f"({trained['data']}), or data binarized with its dictionaries (fairseq-preprocess "
                         "--srcdict/--tgtdict)")


def describe_difference(side, trained, now) -> str:
    """One side's dictionary change, in words."""
    if trained["symbols"] == now["symbols"]:
        return f"{side} dictionary: same size ({now['symbols']} symbols) but other symbols"
    return f"{side} dictionary: {trained['symbols']} symbols in the checkpoint but {now['symbols']} now"


class CheckpointGuard:
    """Mixin before a fairseq model class. `guard_checkpoints` (when the model is built)
    records the normalization flags and the dictionaries' fingerprint; they are saved with the
    weights, and weights trained on other dictionaries are refused, as are weights trained
    with other flags unless the conversion is deliberate (--reset-optimizer)."""

    def guard_checkpoints(self, normalization: dict, task, conversion_allowed: bool) -> None:
        self.normalization = normalization
        self.normalization_may_change = conversion_allowed
        self.dictionaries = dictionary_fingerprint(task)

    def get_extra_state(self):
        """The normalization flags and the dictionaries' fingerprint, saved with the weights as `_extra_state`."""
        return {**self.normalization, DICTIONARIES: self.dictionaries}

    def set_extra_state(self, state):
        """Refuse weights trained on other dictionaries, and weights trained with other normalization
        flags except in a deliberate conversion (--reset-optimizer, as in --restore-file
        L2_CHECKPOINT --reset-optimizer). Checkpoints without the fingerprint (older ones) pass."""
        normalization = dict(state)
        check_dictionary_fingerprints(normalization.pop(DICTIONARIES, {}), self.dictionaries)
        keys = sorted(set(normalization) | set(self.normalization))
        changed = {k: (normalization.get(k, "unset"), self.normalization.get(k, "unset")) for k in keys
                   if normalization.get(k) != self.normalization.get(k)}
        if changed and not self.normalization_may_change:
            flags = ", ".join(f"--{k.replace('_', '-')} {old} in the checkpoint but {new} now"
                              for k, (old, new) in changed.items())
            raise ValueError(f"this checkpoint was trained with other normalization flags ({flags}). "
                             "Resume with the checkpoint's flags, or convert it deliberately with "
                             "--restore-file CHECKPOINT --reset-optimizer")

    def upgrade_state_dict_named(self, state_dict, name):
        """Checkpoints of stock fairseq models (or older ones) have no `_extra_state`: accept them.
        Check the extra state here too: fairseq calls this before loading any weight, so other
        dictionaries are named before torch reports embeddings of another size."""
        super().upgrade_state_dict_named(state_dict, name)
        key = f"{name}.{EXTRA_STATE}" if name else EXTRA_STATE
        self.set_extra_state(state_dict.setdefault(key, self.get_extra_state()))
