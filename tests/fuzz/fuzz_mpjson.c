/* fuzz_mpjson — one JSON line as mode-cat --from-json reads it (lib/mpjson.c): parsed to msgpack,
 * decoded, checked as a header, printed back. */
#include "../../lib/mpjson.h"
#include "../../lib/stream.h"
#include "fuzz.h"

#include <fcntl.h>
#include <unistd.h>

static struct mode_wbuf sink;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    struct mode_err err;
    mode_wbuf_init(&sink, open("/dev/null", O_WRONLY), "/dev/null", &err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mode_mp b;
    struct mode_err err;
    mode_mp_init(&b);
    if (!mode_mpjson_parse(&b, (const char *)data, size, "fuzz", &err) && !mode_mp_finish(&b, &err)) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        if (msgpack_unpack_next(&u, b.buf, b.len, &off) == MSGPACK_UNPACK_SUCCESS) {
            mode_stream_check_header(&u.data, "fuzz", "line", &err);
            mode_mpjson_write(&sink, &u.data, 1);
        }
        msgpack_unpacked_destroy(&u);
    }
    mode_mp_free(&b);
    sink.len = 0;
    return 0;
}
