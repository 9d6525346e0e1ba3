"""One open registry mechanism for every kind of component.

A component (an aggregator, an attack, a server optimizer, a model...) is one class. fedfort's
own components and a user's are registered the same way::

    from fedfort.aggregation import Aggregator, register

    @register("my_rule")                     # options schema: MyRule.__init__'s signature
    class MyRule(Aggregator): ...

    @register("my_rule2", config=MyRuleConfig)   # or an explicit pydantic schema

A run config names a component by its registered name or by an import path
(``"mypkg.rules:MyRule"``), with its options in a table; the options are validated by the
component's own schema, and an unknown name or key is refused with a "did you mean".

Every :class:`Component` remembers the arguments it was built with, so
:meth:`Registry.spec_of` turns a live object back into a :class:`ComponentSpec` (a name and
JSON options, nested components included). A run stores those specs in its identity, and a
resume rebuilds exactly the components that ran (:meth:`Registry.build`) or refuses with the
reason. Parameters named in ``context`` (for example ``seed`` or FLTrust's ``server_update``)
are supplied by the run and are not options.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import inspect
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from fedfort.errors import ConfigError

__all__ = ["Component", "ComponentSpec", "Entry", "Registry", "import_object"]

T = TypeVar("T")
C = TypeVar("C")

#: the key that marks a nested component inside options: ``{"ref": "krum", "options": {...}}``
REF = "ref"


def import_object(path: str, what: str = "component") -> Any:
    """The object at import path ``"package.module:Name"`` (``Name`` may be dotted)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{what} {path!r} is not an import path of the form 'package.module:Name'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {path!r}: cannot import {module_name!r} ({exc})") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what} {path!r}: {module_name!r} has no {attr!r}") from None
    return obj


def import_path(obj: Any) -> str:
    """``"module:QualName"`` of a class or function defined at module level."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname:
        raise ConfigError(
            f"{obj!r} has no import path (it is defined inside a function): define it at "
            "module level, or register it under a name"
        )
    return f"{module}:{qualname}"


class Component:
    """Base of registrable components: remembers the arguments of its constructor.

    The arguments of the most derived ``__init__`` are recorded (after defaults are applied)
    in ``component_args``; :meth:`Registry.spec_of` reads them to name the object in a run's
    identity. Dataclass components need nothing: their fields are their options.
    """

    component_args: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_args", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: Any, *args: Any, **kw: Any) -> None:
            if "component_args" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                values = dict(bound.arguments)
                values.pop(next(iter(signature.parameters)))
                for name, param in signature.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD:
                        values.update(values.pop(name, {}))
                    elif param.kind is inspect.Parameter.VAR_POSITIONAL and not values.get(name):
                        values.pop(name, None)  # none given (spec_of refuses any given)
                # a copy of the containers: a constructor that appends to a list it was
                # given must not change what the run records
                object.__setattr__(self, "component_args", _snapshot(values))
            init(self, *args, **kw)

        recording_init._records_args = True  # type: ignore[attr-defined]
        cls.__init__ = recording_init  # type: ignore[method-assign]


def _snapshot(value: Any) -> Any:
    """``value`` with its lists, tuples and dicts copied (other objects are shared)."""
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snapshot(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_snapshot(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    """A component named by its registered name or import path, with JSON options."""

    ref: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {REF: self.ref, "options": self.options}


@dataclasses.dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered (or imported) component: how to build it and what options it takes."""

    kind: str
    ref: str
    factory: Callable[..., T]
    schema: type[BaseModel]
    context: tuple[str, ...] = ()
    #: options from the flat keys of the component's config section (fedfort's own keys)
    legacy: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None


def _schema_from_signature(
    factory: Callable[..., Any], context: Iterable[str], nested: type | None
) -> type[BaseModel]:
    """A pydantic model of the keyword options ``factory`` takes (context parameters apart)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    target = getattr(target, "__wrapped__", target)
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: validate the values' JSON types only
        hints = {}
    fields: dict[str, Any] = {}
    skip = set(context)
    params = list(signature.parameters.values())
    if inspect.isclass(factory):
        params = params[1:]
    for param in params:
        if param.name in skip or param.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        annotation = hints.get(param.name, Any)
        if nested is not None and _mentions(annotation, nested):
            annotation = Any  # a nested component: built by the registry, not by pydantic
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    name = f"{getattr(factory, '__name__', 'Component')}Options"
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    model: type[BaseModel] = create_model(name, __config__=config, **fields)
    return model


def _mentions(annotation: Any, cls: type) -> bool:
    if annotation is cls or (inspect.isclass(annotation) and issubclass(annotation, cls)):
        return True
    return any(_mentions(arg, cls) for arg in typing.get_args(annotation))


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON (nested components as specs), or a ConfigError naming ``where``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where} = {value} is not a finite number")
        return value
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise ConfigError(
                    f"{where} has the key {key!r}, a {type(key).__name__}: a run records "
                    "tables with string keys only (a resume would rebuild it with "
                    f"{str(key)!r}), so give the component a table keyed by strings"
                )
        return {k: _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Component) or dataclasses.is_dataclass(value):
        owner = _owner(value)
        if owner is not None:
            return owner.spec_of(value).to_dict()
    raise ConfigError(
        f"{where} is a {type(value).__name__}, which a run cannot record: give the component "
        "JSON options (numbers, strings, lists, tables, other components) so a resume can "
        "rebuild it"
    )


#: which registry a component class belongs to (for nested components)
_OWNERS: dict[type, Registry[Any]] = {}
#: every registry, in creation order (a user's class nested in a wrapper is named by the
#: registry whose interface it implements, registered or not)
_REGISTRIES: list[Registry[Any]] = []


def _owner(value: Any) -> Registry[Any] | None:
    """The registry that names ``value``: its class's, else the one whose base it subclasses."""
    owner = _OWNERS.get(type(value))
    if owner is not None:
        return owner
    return next((r for r in _REGISTRIES if isinstance(value, r.base)), None)


class Registry(Generic[T]):
    """Components of one kind (``"aggregator"``, ``"attack"``...), by name.

    ``base`` is the interface every component of this kind implements; options typed as
    ``base`` are nested components, written ``{ref = "name", options = {...}}`` in a config.
    """

    def __init__(self, kind: str, base: type[Any]) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry[T]] = {}
        #: entries of classes named by import path (their options schema is built once)
        self._imported: dict[str, Entry[T]] = {}
        _REGISTRIES.append(self)

    def register(
        self,
        name: str,
        *,
        config: type[BaseModel] | None = None,
        context: Iterable[str] = (),
        legacy: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> Callable[[C], C]:
        """Class decorator: register the component under ``name``.

        ``config`` is its options schema (default: derived from the constructor's
        signature); ``context`` names constructor parameters the run supplies (``seed``...);
        ``legacy`` turns the flat keys of the config's section into options (fedfort's own
        components, whose options predate the registry).
        """
        if not name or ":" in name:
            raise ConfigError(f"a {self.kind} name must be non-empty without ':', got {name!r}")

        def decorate(factory: C) -> C:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            ctx = tuple(context)
            schema = config or _schema_from_signature(factory, ctx, self.base)  # type: ignore[arg-type]
            self._entries[name] = Entry(
                self.kind,
                name,
                factory,  # type: ignore[arg-type]
                schema,
                ctx,
                legacy,
            )
            if inspect.isclass(factory):
                _OWNERS[factory] = self
            return factory

        return decorate

    def unregister(self, name: str) -> None:
        """Forget the component registered as ``name`` (a no-op for an unknown name)."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def resolve(self, ref: str) -> Entry[T]:
        """The entry for a registered name or an import path; ConfigError otherwise."""
        entry = self._entries.get(ref)
        if entry is not None:
            return entry
        if ":" not in ref:
            close = difflib.get_close_matches(ref, self._entries, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {ref!r}{hint} Choose one of {sorted(self.names())} or "
                "give an import path 'package.module:Name'"
            )
        imported = self._imported.get(ref)
        if imported is not None:
            return imported
        factory = import_object(ref, self.kind)
        for known in self._entries.values():
            if known.factory is factory:
                return known
        # an import path names a class of this kind, never an arbitrary callable: a config must
        # not be able to call, say, os:system with its options (register a factory function
        # in code to give it a name)
        if not inspect.isclass(factory) or not issubclass(factory, self.base):
            raise ConfigError(
                f"{self.kind} {ref!r} is not a {self.base.__name__} class (an import path names "
                f"a subclass of {self.base.__module__}.{self.base.__name__}; register a factory "
                "function under a name instead)"
            )
        _OWNERS.setdefault(factory, self)
        built = cast(Callable[..., T], factory)
        entry = Entry(self.kind, ref, built, _schema_from_signature(factory, (), self.base))
        self._imported[ref] = entry
        return entry

    def options(self, ref: str, raw: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
        """``raw`` validated by the component's schema; unknown keys get a "did you mean"."""
        entry = self.resolve(ref)
        where = where or f"{self.kind} {ref!r}"
        fields = entry.schema.model_fields
        unknown = [k for k in raw if k not in fields]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where} has no option {key!r}{hint}; its options are {sorted(fields)}"
            )
        try:
            model = entry.schema.model_validate(dict(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{where}: option {loc!r}: {first['msg']}") from None
        return {k: getattr(model, k) for k in fields if k in raw or k in model.model_fields_set}

    def build(
        self,
        ref: str,
        options: Mapping[str, Any] | None = None,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> T:
        """The component ``ref`` built with validated ``options`` and the run's ``context``."""
        entry = self.resolve(ref)
        values = self.options(ref, options or {})
        built = {
            k: self._nested(v, f"{self.kind} {ref!r} option {k!r}", context)
            for k, v in values.items()
        }
        for key in _nested_parameters(entry.factory, self.base):
            if key in built and built[key] is not None and not isinstance(built[key], self.base):
                raise ConfigError(
                    f"{self.kind} {ref!r} option {key!r} is a nested {self.kind}: write it as "
                    f'{{ref = "name", options = {{...}}}}, got {values[key]!r}'
                )
        accepted = _parameters(entry.factory)
        for key, value in (context or {}).items():
            if key in accepted and key not in built:
                built[key] = value
        try:
            component = entry.factory(**built)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.kind} {ref!r} cannot be built with {values}: {exc}") from exc
        if not isinstance(component, self.base):
            raise ConfigError(
                f"{self.kind} {ref!r} built a {type(component).__name__}, not a "
                f"{self.base.__name__}: name a {self.base.__name__} class or a factory that "
                "returns one"
            )
        return component

    def _nested(self, value: Any, where: str, context: Mapping[str, Any] | None) -> Any:
        if isinstance(value, Mapping) and REF in value:
            extra = set(value) - {REF, "options"}
            if extra:
                raise ConfigError(f"{where}: a nested component takes only 'ref' and 'options'")
            options = value.get("options") or {}
            if not isinstance(options, Mapping):
                raise ConfigError(
                    f"{where}: 'options' of a nested component is a table, got {options!r}"
                )
            return self.build(str(value[REF]), options, context=context)
        return value

    def spec_of(self, component: Any) -> ComponentSpec:
        """The name and options that rebuild ``component`` (for a run's identity)."""
        cls = type(component)
        ref = next((e.ref for e in self._entries.values() if e.factory is cls), None)
        if ref is None:
            ref = import_path(cls)
        entry = self.resolve(ref)
        if dataclasses.is_dataclass(component):
            fields = dataclasses.fields(component)
            args = {f.name: getattr(component, f.name) for f in fields if f.init}
        else:
            recorded: dict[str, Any] | None = getattr(component, "component_args", None)
            if recorded is None and cls.__init__ is object.__init__:
                recorded = {}  # no constructor anywhere in its classes: no options
            if recorded is None:
                raise ConfigError(
                    f"{cls.__name__} does not record its constructor arguments: subclass "
                    f"{self.base.__name__} (a fedfort Component) so a run can name it"
                )
            args = recorded
            init = getattr(cls.__init__, "__wrapped__", cls.__init__)
            for param in inspect.signature(init).parameters.values():
                if param.kind is inspect.Parameter.VAR_POSITIONAL and param.name in args:
                    raise ConfigError(
                        f"{cls.__name__} was given extra positional arguments (*{param.name}), "
                        "which a run cannot name: take them as one keyword option (a list) so "
                        "a resume can rebuild the component"
                    )
        options = {
            k: _jsonable(v, f"{self.kind} {ref!r} option {k!r}")
            for k, v in args.items()
            if k not in entry.context
        }
        return ComponentSpec(ref, options)


def _nested_parameters(factory: Callable[..., Any], base: type) -> list[str]:
    """The parameters of ``factory`` typed as (or containing) ``base``: nested components."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    target = getattr(target, "__wrapped__", target)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: no parameter is known to be nested
        return []
    return [k for k, v in hints.items() if k != "return" and _mentions(v, base)]


def _parameters(factory: Callable[..., Any]) -> set[str]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(getattr(target, "__wrapped__", target)).parameters
    return set(params)
