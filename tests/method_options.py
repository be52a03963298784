"""One bag of method options for tests parametrised over methods."""
from pyromm.methods import METHODS
from pyromm.options import option_names


def for_method(model: str, **options):
    """``options`` without those that other methods declare and ``model`` does not (which RunConfig refuses)."""
    own = set(option_names(METHODS[model].Options))
    others = {name for method in METHODS for name in option_names(method.Options)} - own
    return {key: value for key, value in options.items() if key not in others}
