"""A short terminal for tools/train.py and tools/test.py: mmengine's whole log (environment, config dump,
hook order, set-up warnings) still goes to the work dir's log file; the terminal gets a header, the
progress lines, the metric tables and errors. ``--verbose`` (no filter) prints everything as before."""
from __future__ import annotations

import logging
import os
import warnings

#: INFO records the terminal keeps (the rest is in the log file)
KEEP = ('Iter(', 'Epoch(', 'Saving checkpoint', '| patch |', 'resumed epoch', 'Auto resumed', 'Load checkpoint from',
        'The best checkpoint', 'pretrained: ')
#: WARNING records of mmengine's own set-up that say nothing to the user
NOISE = ('FileClient', 'HardDiskBackend', 'The prefix is not set', 'is the alias of')


class ConsoleFilter(logging.Filter):
    """Lets errors, non-noise warnings and the :data:`KEEP` lines through to the console handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, 'console', True):
            return False
        if record.levelno >= logging.ERROR:
            return True
        msg = record.getMessage().lstrip()
        if record.levelno >= logging.WARNING:
            return not any(n in msg for n in NOISE)
        return msg.startswith(KEEP)


def _console_handlers(logger):
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def _is_quiet(logger) -> bool:
    return any(isinstance(f, ConsoleFilter) for h in _console_handlers(logger) for f in h.filters)


def _warning_to_log_file(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` while a quiet runner's logger is mmengine's current one: into its log file."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance() if MMLogger._instance_dict else None
    if logger is None or not _is_quiet(logger):
        return _SHOWWARNING(message, category, filename, lineno, file, line)
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    logger.warning(text, extra={'console': False})


_SHOWWARNING = warnings.showwarning


def quiet_console(logger) -> None:
    """Filter ``logger``'s console handler(s) (not its file handler); Python warnings raised while it is
    mmengine's current logger go to its log file only (installed once per process)."""
    for h in _console_handlers(logger):
        if not any(isinstance(f, ConsoleFilter) for f in h.filters):
            h.addFilter(ConsoleFilter())
    if warnings.showwarning is not _warning_to_log_file:
        global _SHOWWARNING
        _SHOWWARNING = warnings.showwarning
        warnings.showwarning = _warning_to_log_file


def unquiet_console(logger) -> None:
    """Undo :func:`quiet_console` (a finished in-process evaluation: later warnings show again)."""
    for h in _console_handlers(logger):
        for f in [f for f in h.filters if isinstance(f, ConsoleFilter)]:
            h.removeFilter(f)


def quiet_runner(runner_cls):
    """``runner_cls`` whose logger's console shows only progress, metrics, warnings and errors."""
    class QuietRunner(runner_cls):
        def build_logger(self, *args, **kwargs):
            logger = super().build_logger(*args, **kwargs)
            quiet_console(logger)
            return logger
    QuietRunner.__name__ = QuietRunner.__qualname__ = runner_cls.__name__
    return QuietRunner


def _short(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith('..') else rel


def log_file(runner) -> str:
    files = [h.baseFilename for h in runner.logger.handlers if isinstance(h, logging.FileHandler)]
    return _short(files[0]) if files else '(none)'


def header(runner, config: str, patches: str) -> str:
    """Config, work dir, device, patch sizes and log file of a run, one line each."""
    import torch
    device = f'cuda ({torch.cuda.get_device_name()})' if torch.cuda.is_available() else \
        f'cpu ({torch.get_num_threads()} threads)'
    return (f'config   {config}\nwork dir {_short(runner.work_dir)}\ndevice   {device}\n'
            f'patches  {patches}\nlog      {log_file(runner)} (environment, config, hooks: --verbose prints them here)')
