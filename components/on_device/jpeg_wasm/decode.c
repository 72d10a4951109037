/*
 * A JPEG decoded as Pillow's Image.draft(mode, (side, side)) then load() decodes it: libjpeg-turbo's
 * scaled IDCT, with the settings Pillow's JpegDecode.c leaves (its draft flag is 0 for draft(), so
 * the default JDCT_ISLOW and fancy upsampling stay), the file handed over in Pillow's 64 KB blocks.
 *
 * The module imports nothing: memory is one arena, reset when the next file's bytes come, so libjpeg's
 * frees need do nothing and an error leaks nothing; and a libjpeg error traps. A trap is the longjmp
 * here: it unwinds to the JavaScript caller, which reads the recorded status, then throws this
 * instance away (the trap left its C stack pointer where the error was) and makes a fresh one.
 */
#include <stddef.h>
#include <stdio.h> /* jpeglib.h names FILE */
#include <string.h>

#define JPEG_INTERNALS /* jpegint.h: whether the file is lossless */
#include "jpeglib.h"
#include "jerror.h"
#include "jmemsys.h"

enum status {
  DECODED = 0,
  TRUNCATED = 1,   /* the data ended before the image: Pillow's "image file is truncated" */
  BROKEN = 2,      /* libjpeg's error_exit: Pillow's "broken data stream" */
  UNSUPPORTED = 3, /* not 8-bit, not 1 or 3 components (Pillow's open refuses them, or is not L or
                      RGB), or lossless (Pillow's draft sizes it for a scale libjpeg does not apply
                      to lossless data, and reads past the rows it sized) */
  NO_MEMORY = 4,   /* the arena could not grow */
  BAD_ARGUMENT = 5
};

/* What JavaScript reads back, at a fixed address (result()). */
struct result {
  int status;
  int libjpeg_code; /* libjpeg's J_MESSAGE_CODE where status is BROKEN or NO_MEMORY */
  int width, height, channels, denominator;
  unsigned char *pixels; /* rows of width * channels bytes, no padding */
};

static struct result outcome;

/* -------- memory: an arena from __heap_base up, grown a page at a time -------- */

extern unsigned char __heap_base;
static size_t arena_top;

static void *arena_take(size_t size)
{
  size_t start = (arena_top + 15) & ~(size_t)15;
  size_t end = start + size;
  size_t have = __builtin_wasm_memory_size(0) * 65536;
  if (end < start)
    return NULL;
  if (end > have &&
      __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) == (size_t)-1)
    return NULL;
  arena_top = end;
  return (void *)start;
}

/* jmemsys.h, in place of jmemnobs.c's malloc and free. */
void *jpeg_get_small(j_common_ptr cinfo, size_t size) { return arena_take(size); }
void *jpeg_get_large(j_common_ptr cinfo, size_t size) { return arena_take(size); }
void jpeg_free_small(j_common_ptr cinfo, void *object, size_t size) {}
void jpeg_free_large(j_common_ptr cinfo, void *object, size_t size) {}
size_t jpeg_mem_available(j_common_ptr cinfo, size_t min_bytes_needed, size_t max_bytes_needed,
                          size_t already_allocated)
{
  return max_bytes_needed; /* as jmemnobs.c: all in memory, never a backing store */
}
void jpeg_open_backing_store(j_common_ptr cinfo, backing_store_ptr info, long total_bytes_needed)
{
  ERREXIT(cinfo, JERR_NO_BACKING_STORE);
}
long jpeg_mem_init(j_common_ptr cinfo) { return 0; }
void jpeg_mem_term(j_common_ptr cinfo) {}

/* -------- errors: Pillow's handler, with the trap for its longjmp -------- */

static void error_exit(j_common_ptr cinfo)
{
  outcome.libjpeg_code = cinfo->err->msg_code;
  outcome.status = cinfo->err->msg_code == JERR_OUT_OF_MEMORY ? NO_MEMORY : BROKEN;
  __builtin_trap();
}

/* Warnings (corrupt data libjpeg decodes past) are counted and decoding goes on, as in Pillow,
   whose output_message is empty too; jpeg_std_error is not used, so no printf is linked. */
static void emit_message(j_common_ptr cinfo, int msg_level)
{
  if (msg_level < 0)
    cinfo->err->num_warnings++;
}
static void output_message(j_common_ptr cinfo) {}
static void format_message(j_common_ptr cinfo, char *buffer) { buffer[0] = 0; }
static void reset_error_mgr(j_common_ptr cinfo)
{
  cinfo->err->num_warnings = 0;
  cinfo->err->msg_code = 0;
}

/* -------- source: the file handed over as Pillow hands it, a block at a time -------- */

/* Pillow's ImageFile.load reads MAXBLOCK bytes more each time its decoder suspends, and gives it those
   with what it left; its fill_input_buffer always suspends. libjpeg's Huffman decoding resumes after a
   suspension as if nothing happened, but its arithmetic decoding cannot suspend (JERR_CANT_SUSPEND):
   Pillow refuses an arithmetic-coded file whose entropy data crosses a block's end, so this does too.
   And when the file has no more, Pillow says it is truncated (jpeg_mem_src would insert a fake EOI
   and decode on with a warning instead). */
#define PILLOW_BLOCK 65536

static unsigned char *input;
static size_t input_length;
static size_t handed;       /* bytes of the file Pillow would have read so far */
static size_t pending_skip; /* Pillow's source->skip: bytes to skip in data not yet read */

static boolean fill_input_buffer(j_decompress_ptr cinfo) { return FALSE; }
static void init_source(j_decompress_ptr cinfo) {}
static void term_source(j_decompress_ptr cinfo) {}

/* Pillow's skip_input_data. */
static void skip_input_data(j_decompress_ptr cinfo, long num_bytes)
{
  struct jpeg_source_mgr *src = cinfo->src;
  if (num_bytes > (long)src->bytes_in_buffer) {
    pending_skip = (size_t)num_bytes - src->bytes_in_buffer;
    src->next_input_byte += src->bytes_in_buffer;
    src->bytes_in_buffer = 0;
  } else {
    src->bytes_in_buffer -= (size_t)num_bytes;
    src->next_input_byte += num_bytes;
    pending_skip = 0;
  }
}

/* After a suspension, the next block, as ImageFile.load reads it (and the skip Pillow's decoder makes
   first); 0 where the file has no more: truncated. */
static int next_block(j_decompress_ptr cinfo)
{
  struct jpeg_source_mgr *src = cinfo->src;
  do {
    if (handed >= input_length)
      return 0;
    handed += input_length - handed < PILLOW_BLOCK ? input_length - handed : PILLOW_BLOCK;
    src->bytes_in_buffer = (size_t)(input + handed - src->next_input_byte);
    if (pending_skip > 0)
      skip_input_data(cinfo, (long)pending_skip);
  } while (pending_skip > 0);
  return 1;
}

/* -------- exports -------- */

__attribute__((export_name("result"))) struct result *result(void) { return &outcome; }

/* Room for the next file's bytes; everything of the previous file is released. */
__attribute__((export_name("input_buffer"))) unsigned char *input_buffer(size_t length)
{
  arena_top = (size_t)&__heap_base;
  input = arena_take(length);
  input_length = input ? length : 0;
  return input;
}

/* Pillow's draft: the scale is the largest of 8, 4, 2 that the smaller ratio of the image's sides to
   `side` allows (JpegImagePlugin.draft: min(width // side, height // side)); side 0: full size.
   want_gray asks for L from a colour file (draft("L") on an RGB image); a grey file stays grey.
   The steps are ImagingJpegDecode's, each tried again with the next block while it suspends. */
__attribute__((export_name("decode"))) struct result *decode(int side, int want_gray)
{
  struct jpeg_decompress_struct cinfo;
  struct jpeg_error_mgr err;
  struct jpeg_source_mgr src;
  int header, ratio;
  size_t stride;

  memset(&outcome, 0, sizeof(outcome));
  if (!input || side < 0) {
    outcome.status = input ? BAD_ARGUMENT : NO_MEMORY;
    return &outcome;
  }
  memset(&err, 0, sizeof(err));
  err.error_exit = error_exit;
  err.emit_message = emit_message;
  err.output_message = output_message;
  err.format_message = format_message;
  err.reset_error_mgr = reset_error_mgr;
  cinfo.err = &err;
  jpeg_create_decompress(&cinfo);

  handed = input_length < PILLOW_BLOCK ? input_length : PILLOW_BLOCK;
  pending_skip = 0;
  src.next_input_byte = input;
  src.bytes_in_buffer = handed;
  src.init_source = init_source;
  src.fill_input_buffer = fill_input_buffer;
  src.skip_input_data = skip_input_data;
  src.resync_to_restart = jpeg_resync_to_restart;
  src.term_source = term_source;
  cinfo.src = &src;

  /* Past tables-only datastreams to the image's header, as Pillow's decoder reads. */
  while ((header = jpeg_read_header(&cinfo, FALSE)) != JPEG_HEADER_OK) {
    if (header == JPEG_SUSPENDED && !next_block(&cinfo)) {
      outcome.status = TRUNCATED;
      return &outcome;
    }
  }
  if (cinfo.data_precision != 8 || (cinfo.num_components != 1 && cinfo.num_components != 3) ||
      cinfo.master->lossless) {
    outcome.status = UNSUPPORTED;
    return &outcome;
  }
  cinfo.out_color_space = cinfo.num_components == 1 || want_gray ? JCS_GRAYSCALE : JCS_RGB;
  ratio = side ? (int)(cinfo.image_width / (unsigned)side < cinfo.image_height / (unsigned)side
                           ? cinfo.image_width / (unsigned)side
                           : cinfo.image_height / (unsigned)side)
               : 1;
  cinfo.scale_num = 1;
  cinfo.scale_denom = ratio >= 8 ? 8 : ratio >= 4 ? 4 : ratio >= 2 ? 2 : 1;

  while (!jpeg_start_decompress(&cinfo)) {
    if (!next_block(&cinfo)) {
      outcome.status = TRUNCATED;
      return &outcome;
    }
  }
  stride = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
  outcome.pixels = arena_take(stride * cinfo.output_height);
  if (!outcome.pixels) {
    outcome.status = NO_MEMORY;
    return &outcome;
  }
  /* A line at a time, as Pillow reads. */
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = outcome.pixels + stride * cinfo.output_scanline;
    if (jpeg_read_scanlines(&cinfo, &row, 1) != 1 && !next_block(&cinfo)) {
      outcome.status = TRUNCATED;
      return &outcome;
    }
  }
  /* Once every line is read, Pillow takes a suspension here for the end: the pixels stand. */
  jpeg_finish_decompress(&cinfo);
  outcome.width = (int)cinfo.output_width;
  outcome.height = (int)cinfo.output_height;
  outcome.channels = cinfo.output_components;
  outcome.denominator = (int)cinfo.scale_denom;
  outcome.status = DECODED;
  return &outcome;
}
