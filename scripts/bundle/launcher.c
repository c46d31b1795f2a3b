/*
 * OUTDIR/envwrap: the bundle's command. It embeds CPython (libpython from
 * OUTDIR/lib, found through this binary's RUNPATH $ORIGIN/lib) and runs
 * envwrap.cli.main in-process, so starting envwrap costs one exec, as with the
 * pip-installed command.
 *
 * Relocatable: every path is derived from /proc/self/exe at run time, so the
 * folder can be copied anywhere. Isolated from the image it runs in: PYTHON*
 * variables, user site-packages and the current directory are ignored, so an
 * application image's own Python settings cannot change which code runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PYVER
#error "PYVER (e.g. \"3.11\") must be defined"
#endif

static const wchar_t RUN[] =
    L"import sys\n"
    L"from envwrap.cli import main\n"
    L"sys.exit(main())\n";

static void fail(const char *what, PyConfig *config, PyStatus status)
{
    if (config != NULL)
        PyConfig_Clear(config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    fprintf(stderr, "envwrap: bundle is broken: %s\n", what);
    exit(78); /* DESIGN §6: a configuration error */
}

static PyStatus add_path(PyConfig *config, const char *root, const char *rel)
{
    char buf[PATH_MAX];
    wchar_t *wide;
    PyStatus status;

    snprintf(buf, sizeof buf, "%s/%s", root, rel);
    wide = Py_DecodeLocale(buf, NULL);
    if (wide == NULL)
        return PyStatus_NoMemory();
    status = PyWideStringList_Append(&config->module_search_paths, wide);
    PyMem_RawFree(wide);
    return status;
}

int main(int argc, char **argv)
{
    char exe[PATH_MAX];
    char root[PATH_MAX];
    ssize_t n;
    char *slash;
    PyConfig config;
    PyStatus status;

    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
    } else if (strchr(argv[0], '/') != NULL && realpath(argv[0], exe) != NULL) {
        n = (ssize_t)strlen(exe);   /* no /proc (a bare chroot): the path it was run by */
    } else {
        fail("cannot read /proc/self/exe", NULL, PyStatus_Ok());
    }
    memcpy(root, exe, (size_t)n + 1);
    slash = strrchr(root, '/');
    if (slash == NULL)
        fail("cannot locate the bundle folder", NULL, PyStatus_Ok());
    *slash = '\0';

    PyConfig_InitPythonConfig(&config);
    config.parse_argv = 0;          /* every argument is envwrap's, none CPython's */
    config.use_environment = 0;     /* PYTHONPATH, PYTHONHOME... of the image: ignored */
    config.user_site_directory = 0;
    config.site_import = 0;         /* no site.py: the search path is set below */
    config.safe_path = 1;
    config.write_bytecode = 0;      /* the bundle ships its .pyc; it may be read-only */
    config.pathconfig_warnings = 0;

    status = PyConfig_SetBytesString(&config, &config.executable, exe);
    if (PyStatus_Exception(status))
        fail("executable", &config, status);
    status = PyConfig_SetBytesString(&config, &config.program_name, exe);
    if (PyStatus_Exception(status))
        fail("program name", &config, status);
    status = PyConfig_SetBytesString(&config, &config.home, root);
    if (PyStatus_Exception(status))
        fail("home", &config, status);

    config.module_search_paths_set = 1;
    status = add_path(&config, root, "lib/python" PYVER);
    if (!PyStatus_Exception(status))
        status = add_path(&config, root, "lib/python" PYVER "/lib-dynload");
    if (!PyStatus_Exception(status))
        status = add_path(&config, root, "lib/python" PYVER "/site-packages");
    if (PyStatus_Exception(status))
        fail("module search path", &config, status);

    status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (PyStatus_Exception(status))
        fail("argv", &config, status);
    status = PyConfig_SetString(&config, &config.run_command, RUN);
    if (PyStatus_Exception(status))
        fail("command", &config, status);

    status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    return Py_RunMain();
}
