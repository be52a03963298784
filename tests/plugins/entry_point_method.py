"""A method an installed package would register through the ``pyromm.plugins`` entry-point group: pyromm's
independent VAEs under another name."""
from pyromm.methods import register_method
from pyromm.methods.independent import Independent


class EntryPointVAEs(Independent):
    name = "toy_entry_point"
    doc = "independent VAEs, registered through an entry point"


register_method(EntryPointVAEs())
