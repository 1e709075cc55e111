"""ProLab as an mmsegmentation plugin.

Importing ``prolab_models.register`` registers its modules in mmseg's registries (configs name
it: ``custom_imports = dict(imports=['prolab_models.register'])``). The package itself imports
nothing, so the label-space reader (``prolab_models.label_space``) and the errors
(``prolab_models.errors``) cost no import of torch or mmseg.
"""
