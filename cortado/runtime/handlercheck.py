"""The deploy-time check of a handler file: its source's syntax tree read against the handler rules, nothing run.

What only running the file can tell (inherited methods, imported or generated classes) passes here and is left to
the load-time check in ``loading``, which gives the same messages.
"""

from __future__ import annotations

import ast
import inspect
import warnings
from collections.abc import Iterator, Sequence

from cortado.runtime.errors import HandlerDefinitionError
from cortado.runtime.rules import (
    ALLOWED_INIT_PARAMS,
    CLASS_NAME,
    METHOD_PARAMS,
    Params,
    init_params_for,
    method_problem,
    missing_class_message,
    missing_client,
    missing_method_message,
    syntax_error_message,
)

_P = inspect.Parameter


def _scope_statements(body: Sequence[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run in this scope, including those nested in if/try/with/for/match blocks."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for _, value in ast.iter_fields(stmt):
            if not isinstance(value, list):
                continue
            for item in value:
                if isinstance(item, ast.stmt):
                    yield from _scope_statements([item])
                elif isinstance(item, ast.ExceptHandler | ast.match_case):
                    yield from _scope_statements(item.body)


def _may_bind_handler(tree: ast.Module) -> bool:
    """Whether anything in the module could bind the name Handler (generous: any scope counts)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == CLASS_NAME:
            return True
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                # A star import may bring Handler in; only the runtime check can tell.
                bound = alias.asname or alias.name.partition(".")[0]
                if bound in (CLASS_NAME, "*"):
                    return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == CLASS_NAME:
            return True
        if isinstance(node, ast.Global) and CLASS_NAME in node.names:
            return True
        if isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name == CLASS_NAME:
            return True
    return False


def _ast_params(args: ast.arguments) -> Params:
    """A function's parameters as written in its ``def``, in declaration order."""
    params: Params = [(a.arg, _P.POSITIONAL_ONLY) for a in args.posonlyargs]
    params += [(a.arg, _P.POSITIONAL_OR_KEYWORD) for a in args.args]
    if args.vararg:
        params.append((args.vararg.arg, _P.VAR_POSITIONAL))
    params += [(a.arg, _P.KEYWORD_ONLY) for a in args.kwonlyargs]
    if args.kwarg:
        params.append((args.kwarg.arg, _P.VAR_KEYWORD))
    return params


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """The decorators of a ``def`` that are plain names (``staticmethod``, say)."""
    return {d.id for d in node.decorator_list if isinstance(d, ast.Name)}


def _check_class_node(filename: str, cls: ast.ClassDef, init_allowed: Sequence[str] = ALLOWED_INIT_PARAMS) -> None:
    """Raise HandlerDefinitionError for the first rule the ``Handler`` class statement plainly breaks.

    Bases, a metaclass or class decorators may supply methods, so a class with any of them is only checked for
    the methods it defines itself.
    """
    defs: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    bound: list[str] = []
    for stmt in _scope_statements(cls.body):
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            defs[stmt.name] = stmt  # the last definition wins, as when the class body runs
            bound.append(stmt.name)
        elif isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                bound += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
                defs = {k: v for k, v in defs.items() if k not in bound}
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            bound += [a.asname or a.name.partition(".")[0] for a in stmt.names]
    for method, node in defs.items():
        if method not in METHOD_PARAMS:
            continue
        if method == "__init__" and isinstance(node, ast.AsyncFunctionDef):
            raise HandlerDefinitionError(f"{filename}: {CLASS_NAME}.__init__() must be a plain def, not async def")
        decorators = _decorator_names(node)
        problem = method_problem(
            filename, method, _ast_params(node.args), "staticmethod" not in decorators, init_allowed
        )
        if problem:
            raise HandlerDefinitionError(problem)
    # Bases, a metaclass or class decorators can supply the methods; the runtime check has the final word there.
    plain_bases = all(isinstance(b, ast.Name) and b.id == "object" for b in cls.bases)
    supplied_elsewhere = not plain_bases or cls.keywords or cls.decorator_list
    if not supplied_elsewhere and "__init__" not in defs and "__init__" not in bound:
        problem = missing_client(filename, [], init_allowed)
        if problem:
            raise HandlerDefinitionError(problem)
    if not supplied_elsewhere and not {"handle_async", "handle_batch"} & set(bound):
        raise HandlerDefinitionError(missing_method_message(filename, bound))


def check_handler_source(source: str, filename: str, handler_type: str = "python") -> None:
    """Check a handler file's source without running it, as at deploy time.

    Raises HandlerDefinitionError (naming ``filename``) when the source does not parse, when no top-level class
    ``Handler`` exists and nothing else could bind that name, when the class plainly lacks both ``handle_async`` and
    ``handle_batch``, or when ``__init__``/``handle_async``/``handle_batch`` take a parameter other than the allowed
    names (or take one positional-only). ``*args``/``**kwargs`` are accepted. For ``handler_type`` tensorflow,
    ``__init__`` may also take, and must take, ``tensorflow_client``. Anything only the runtime can know (inherited
    methods, imported or generated classes) passes here and is checked by ``load_handler_class``.
    """
    try:
        with warnings.catch_warnings():
            # A warning (say, for "\d" in a plain string) must not stop a deploy that Python itself would run, even
            # where warnings are turned into errors.
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=filename)
    except SyntaxError as error:
        raise HandlerDefinitionError(syntax_error_message(filename, error)) from None
    except ValueError as error:  # e.g. null bytes in the source
        raise HandlerDefinitionError(f"{filename}: invalid Python: {error}") from None
    top_level = list(_scope_statements(tree.body))
    classes = [s for s in top_level if isinstance(s, ast.ClassDef) and s.name == CLASS_NAME]
    if not classes:
        if _may_bind_handler(tree):
            return
        names = [s.name for s in top_level if isinstance(s, ast.ClassDef)]
        raise HandlerDefinitionError(missing_class_message(filename, names))
    for cls in classes:
        _check_class_node(filename, cls, init_params_for(handler_type))
