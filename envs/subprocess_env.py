"""Environments in their own processes, for simulators that allow one instance per process.

PyRep (and with it RLBench and Colosseum) drives one CoppeliaSim instance per process: its
``PyRep.launch`` starts the simulator's UI thread and keeps the scene in module-level state of
the C library, so two ``Environment``s cannot run side by side in one Python process. Evaluating
RLBench with several environments therefore needs one process per environment, with the policy
batched in the parent. :class:`SubprocessEnv` is that process: it builds the env from a picklable
factory in a ``spawn``-ed child (no simulator or GL state is inherited) and forwards ``reset``,
``step``, ``render`` and ``close`` through a pipe. :func:`parallel_calls` sends one call to
several envs and then collects the answers, so subprocess envs step at the same time while
in-process envs step one after the other. Any backend can run this way (``eval.py
env_processes=true``).

This is our own small vector env instead of gymnasium's ``AsyncVectorEnv``: the evaluation runs
each sub-env's episode on its own seed, stops finished ones while the others go on and rebuilds a
sub-env that raised, which an auto-resetting vector env does not allow.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import pickle
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from envs.options import max_episode_steps
from stemob.errors import StemobError

START_TIMEOUT_S = 600.0
"""How long to wait for a child to build its env (CoppeliaSim takes tens of seconds)."""


class SubprocessEnvError(RuntimeError):
    """An exception raised inside the child process (its type, message and traceback)."""


def _worker(conn: Any, factory: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """The child: build the env, then answer ``(method, args, kwargs)`` requests until close."""
    try:
        env = factory(*args)
        description = {
            "observation_space": env.observation_space,
            "action_space": env.action_space,
            "metadata": dict(getattr(env, "metadata", {}) or {}),
            "max_episode_steps": max_episode_steps(env),
        }
        conn.send(("ok", description))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        conn.send(("error", _describe(error)))
        conn.close()
        return
    try:
        while True:
            try:
                method, call_args, kwargs = conn.recv()
            except EOFError:  # the parent went away
                break
            if method == "close":
                env.close()
                conn.send(("ok", None))
                break
            try:
                conn.send(("ok", getattr(env, method)(*call_args, **kwargs)))
            except BaseException as error:  # noqa: BLE001 - reported to the parent
                conn.send(("error", _describe(error)))
    finally:
        conn.close()


def _describe(error: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    where = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    return text + (
        f" (in the env process, at {where[0].filename}:{where[0].lineno})" if where else ""
    )


class SubprocessEnv:
    """``factory(*args)`` run in a child process; the gymnasium ``reset``/``step``/``render``/
    ``close`` of the env it builds, plus :meth:`call_async`/:meth:`call_wait`.

    Args:
        factory: a picklable callable (a module-level function) that builds the env.
        args: its picklable arguments (e.g. robomimic ``env_args`` and a perturbation).
        context: the multiprocessing start method (``spawn``: nothing of the parent's simulator,
            GL or torch thread state is inherited).

    The child builds its env while the parent goes on (several envs start at once);
    ``observation_space``, ``action_space``, ``metadata`` and ``max_episode_steps`` are read
    once from the child's env, and the first of them (or the first call's answer) waits for it. An exception inside the child is raised here as
    :class:`SubprocessEnvError` with the child's message; the child stays up (the caller decides
    whether to close and rebuild it).
    """

    def __init__(self, factory: Callable[..., Any], *args: Any, context: str = "spawn") -> None:
        try:
            pickle.dumps((factory, args))
        except Exception as error:
            raise StemobError(
                f"env factory {factory!r}: a subprocess env needs a picklable factory (a "
                f"module-level function) and arguments ({error})"
            ) from error
        ctx = mp.get_context(context)
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_worker, args=(child, factory, args), daemon=True)
        self._process.start()
        child.close()
        self._waiting = False
        self._closed = False
        self._description: dict[str, Any] | None = None

    def _ready(self) -> dict[str, Any]:
        """The child's description of its env (waits for the child to build it, once)."""
        if self._description is not None:
            return self._description
        if self._closed:
            raise StemobError("this subprocess env is closed")
        if not self._conn.poll(START_TIMEOUT_S):
            self._kill()
            raise StemobError(f"the env process did not start within {START_TIMEOUT_S:.0f} s")
        try:
            status, payload = self._conn.recv()
        except EOFError:
            self._kill()
            raise SubprocessEnvError(
                f"the env process died while building its env (exit code {self._process.exitcode})"
            ) from None
        if status != "ok":
            self._kill()
            raise SubprocessEnvError(payload)
        self._description = payload
        return payload

    @property
    def observation_space(self) -> Any:
        return self._ready()["observation_space"]

    @property
    def action_space(self) -> Any:
        return self._ready()["action_space"]

    @property
    def metadata(self) -> dict[str, Any]:
        return self._ready()["metadata"]

    @property
    def max_episode_steps(self) -> int | None:
        return self._ready()["max_episode_steps"]

    @property
    def unwrapped(self) -> SubprocessEnv:
        return self

    def call_async(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Send ``env.<method>(*args, **kwargs)`` to the child without waiting."""
        if self._closed:
            raise StemobError("this subprocess env is closed")
        if self._waiting:
            raise StemobError(f"call_async({method!r}) while the previous call is unanswered")
        self._conn.send((method, args, kwargs))
        self._waiting = True

    def call_wait(self) -> Any:
        """The answer of the pending call (its exception re-raised as SubprocessEnvError)."""
        if not self._waiting:
            raise StemobError("call_wait() without a pending call_async()")
        self._waiting = False
        self._ready()
        try:
            status, payload = self._conn.recv()
        except EOFError:
            self._closed = True
            raise SubprocessEnvError(
                f"the env process died (exit code {self._process.exitcode})"
            ) from None
        if status != "ok":
            raise SubprocessEnvError(payload)
        return payload

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.call_async(method, *args, **kwargs)
        return self.call_wait()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        return self._call("reset", seed=seed, options=options)

    def step(self, action: Any) -> Any:
        return self._call("step", action)

    def render(self) -> Any:
        return self._call("render")

    def close(self) -> None:
        """Close the child's env and end the process (killed if it does not answer)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._waiting:
                self._conn.recv()
            self._conn.send(("close", (), {}))
            if self._conn.poll(30.0):
                self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            pass
        self._process.join(10.0)
        self._kill()

    def _kill(self) -> None:
        self._closed = True
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)
        self._conn.close()

    def __del__(self) -> None:  # a forgotten env must not leave a process behind
        with contextlib.suppress(Exception):
            self._kill()


def parallel_calls(
    envs: Sequence[Any], calls: Sequence[tuple[int, str, tuple, dict]]
) -> dict[int, tuple[bool, Any]]:
    """Run ``envs[j].<method>(*args, **kwargs)`` for each ``(j, method, args, kwargs)``:
    subprocess envs all at once, in-process envs in turn. Returns ``{j: (ok, result or the
    exception)}``; one env's exception never stops the others."""
    out: dict[int, tuple[bool, Any]] = {}
    sent = []
    for j, method, args, kwargs in calls:
        env = envs[j]
        try:
            if isinstance(env, SubprocessEnv):
                env.call_async(method, *args, **kwargs)
                sent.append(j)
            else:
                out[j] = (True, getattr(env, method)(*args, **kwargs))
        except Exception as error:
            out[j] = (False, error)
    for j in sent:
        try:
            out[j] = (True, envs[j].call_wait())
        except Exception as error:
            out[j] = (False, error)
    return out
