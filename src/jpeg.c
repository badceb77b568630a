/* JPEG decoding with libjpeg-turbo's own decoder, set up as Pillow sets it up,
 * so that quba sees the pixels the study's models saw (docs/design.md,
 * "JPEG as Pillow decodes it").
 *
 * libjpeg reports errors through error_exit, which must not return. Rust
 * cannot catch a longjmp, and the board binary is built with panic=abort, so
 * the whole decode lives here, behind one setjmp; Rust gets a status and the
 * library's own message. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jpeglib.h"
#include "jerror.h"

struct quba_error {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

static void quba_error_exit(j_common_ptr cinfo) {
  struct quba_error *err = (struct quba_error *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

/* Pillow ignores libjpeg's warnings (corrupt-data notices) and keeps the
 * pixels, except a file that ends early: its decoder then wants more bytes
 * and Image.load() raises "image file is truncated". Same here: a premature
 * end is an error, every other warning is silent. */
static void quba_emit_message(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) quba_error_exit(cinfo);
}

static void quba_output_message(j_common_ptr cinfo) { (void)cinfo; }

/* Decodes `len` bytes into a malloc'd buffer of width × height × components
 * (1 grey, 3 RGB, 4 CMYK as libjpeg writes it: Adobe files are inverted).
 * Returns 0 on success; otherwise 1 and a message in `message`. Images with
 * more than `max_bytes` output bytes are refused before any allocation. */
int quba_jpeg_decode(const unsigned char *data, unsigned long len, unsigned long max_bytes, unsigned char **out,
                     unsigned int *width, unsigned int *height, int *components, char *message,
                     unsigned long message_len) {
  struct jpeg_decompress_struct cinfo;
  struct quba_error err;
  /* volatile: read after longjmp returns to the setjmp below. */
  unsigned char *volatile pixels = NULL;

  *out = NULL;
  memset(&cinfo, 0, sizeof(cinfo));
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = quba_error_exit;
  err.pub.emit_message = quba_emit_message;
  err.pub.output_message = quba_output_message;
  err.message[0] = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    free(pixels);
    snprintf(message, message_len, "%s", err.message);
    return 1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, len);
  jpeg_read_header(&cinfo, TRUE);
  /* Pillow's choices, which are libjpeg's defaults: islow DCT, fancy
   * upsampling (so no merged upsampler), no block smoothing tricks beyond the
   * library's default for progressive files. Stated, not assumed. */
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) cinfo.out_color_space = JCS_CMYK;
  else if (cinfo.jpeg_color_space == JCS_GRAYSCALE) cinfo.out_color_space = JCS_GRAYSCALE;
  else cinfo.out_color_space = JCS_RGB;
  jpeg_calc_output_dimensions(&cinfo);
  {
    unsigned long long need =
        (unsigned long long)cinfo.output_width * cinfo.output_height * (unsigned long long)cinfo.out_color_components;
    if (need > max_bytes) {
      snprintf(message, message_len, "%u x %u x %d needs %llu bytes, more than the %lu allowed", cinfo.output_width,
               cinfo.output_height, cinfo.out_color_components, need, max_bytes);
      jpeg_destroy_decompress(&cinfo);
      return 1;
    }
    pixels = (unsigned char *)malloc(need ? need : 1);
    if (!pixels) {
      snprintf(message, message_len, "out of memory for %llu bytes", need);
      jpeg_destroy_decompress(&cinfo);
      return 1;
    }
  }
  jpeg_start_decompress(&cinfo);
  {
    size_t stride = (size_t)cinfo.output_width * cinfo.output_components;
    while (cinfo.output_scanline < cinfo.output_height) {
      JSAMPROW row = pixels + stride * cinfo.output_scanline;
      jpeg_read_scanlines(&cinfo, &row, 1);
    }
  }
  jpeg_finish_decompress(&cinfo);
  *width = cinfo.output_width;
  *height = cinfo.output_height;
  *components = cinfo.output_components;
  *out = pixels;
  jpeg_destroy_decompress(&cinfo);
  return 0;
}

void quba_jpeg_free(unsigned char *pixels) { free(pixels); }
