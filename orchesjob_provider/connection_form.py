"""The ``orchesjob_ssh`` connection form as the Flask UI of Airflow 2 asks a hook class for it.

Why it is here and not in the provider info alone: Airflow 3.2+ reads the form from ``get_provider_info()``
(``conn-fields`` / ``ui-field-behaviour``) without importing the hook, but Airflow 2's webserver calls the hook
class's ``get_connection_form_widgets`` and ``get_ui_field_behaviour``. ``OrchesjobHook`` keeps those two class
methods (Airflow looks for them there) and hands over to these functions, which build both from the same
``CONN_FIELDS`` and ``UI_FIELD_BEHAVIOUR`` as the provider info, so the two forms cannot drift apart.
"""

from __future__ import annotations

import importlib
from typing import Any

from orchesjob_provider import CONN_FIELDS, UI_FIELD_BEHAVIOUR

__all__ = ["form_widgets", "ui_field_behaviour"]


def ui_field_behaviour() -> dict[str, Any]:
    """The form's standard fields: which are hidden, how others are relabelled (a copy: callers may change it)."""
    return {key: (list(value) if isinstance(value, list) else dict(value)) for key, value in UI_FIELD_BEHAVIOUR.items()}


def form_widgets() -> dict[str, Any]:
    """The form's extra fields, one WTForms field per ``CONN_FIELDS`` entry by its JSON schema type. The Flask
    packages are imported here, when asked: only Airflow 2's webserver has them, and it is the only caller."""
    fab = importlib.import_module("flask_appbuilder.fieldwidgets")
    lazy_gettext = importlib.import_module("flask_babel").lazy_gettext
    wtforms = importlib.import_module("wtforms")
    optional = importlib.import_module("wtforms.validators").Optional
    widgets: dict[str, Any] = {}
    for name, (label, description, schema) in CONN_FIELDS.items():
        kinds = schema.get("type")
        kinds = set(kinds) if isinstance(kinds, list) else {kinds}
        if "boolean" in kinds:
            field = wtforms.BooleanField(lazy_gettext(label), description=description, default=False)
        elif "integer" in kinds:
            field = wtforms.IntegerField(
                lazy_gettext(label),
                description=description,
                widget=fab.BS3TextFieldWidget(),
                validators=[optional(strip_whitespace=True)],
            )
        elif schema.get("format") == "password":
            field = wtforms.PasswordField(
                lazy_gettext(label), description=description, widget=fab.BS3PasswordFieldWidget()
            )
        else:
            field = wtforms.StringField(lazy_gettext(label), description=description, widget=fab.BS3TextFieldWidget())
        widgets[name] = field
    return widgets
