/* Names of signals, for the JSON documents of the helper and of syscount. */
#ifndef VDSOMATRIX_SIGNAL_NAMES_H
#define VDSOMATRIX_SIGNAL_NAMES_H

/* "SIGSEGV", ...; a number without a name is "SIGRTMIN+N" or "SIG<N>". The text of an unnamed
 * signal lives in a static buffer until the next such call: callers print it at once. */
const char *signal_name(int sig);

#endif
