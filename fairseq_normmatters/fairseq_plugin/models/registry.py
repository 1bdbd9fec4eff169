"""Registering the plugin's models and named architectures with fairseq, once."""

from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY, register_model, register_model_architecture

from .flags import set_defaults


def register_model_once(name):
    """fairseq's register_model, tolerant of this plugin being imported twice under two module
    names (installed package + --user-dir path; fairseq#2081): the first class stays registered."""
    def wrap(cls):
        if _same_class(MODEL_REGISTRY.get(name), cls):
            return cls
        return register_model(name)(cls)
    return wrap


def register_architectures(model_name, variants):
    """Register named architectures; variants maps name -> (base architecture, defaults)."""
    for arch_name, (base, defaults) in variants.items():
        if _same_class(ARCH_MODEL_REGISTRY.get(arch_name), MODEL_REGISTRY[model_name]):
            continue
        register_model_architecture(model_name, arch_name)(with_defaults(base, defaults))


def with_defaults(base, defaults):
    """An architecture function: set `defaults` where args lacks them, then call `base`."""
    def architecture(args):
        set_defaults(args, defaults)
        base(args)
    return architecture


def _same_class(registered, cls) -> bool:
    """Whether `registered` is `cls`, possibly imported under another package name. `is` cannot
    tell: when fairseq loads the plugin from a folder of another name (--user-dir
    path/my_copy) in a process that imports the installed package too, the same source defines
    two class objects, my_copy.fairseq_plugin.models.transformer.NormTransformerModel and
    fairseq_normmatters.fairseq_plugin.models.transformer.NormTransformerModel. They match on the class name
    and the module's last component."""
    return registered is not None and registered.__qualname__ == cls.__qualname__ and \
        registered.__module__.rsplit(".", 1)[-1] == cls.__module__.rsplit(".", 1)[-1]
